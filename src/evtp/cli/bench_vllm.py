"""``evtp bench vllm``: flags -> `evtp.bench.vllm.VllmBenchConfig` -> `evtp.bench.vllm.run_vllm_bench`."""
from __future__ import annotations

import importlib.util

from evtp.bench import vllm as bench
from evtp.cli.args import out_file, parser, positive_int
from evtp.settings import SettingsError


def _keeps(text: str) -> tuple[float, ...]:
    try:
        keeps = tuple(float(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise SettingsError(f"--keep {text!r}: expected comma-separated numbers in (0, 1]") from None
    if not keeps or any(not 0.0 < k <= 1.0 for k in keeps):
        raise SettingsError(f"--keep {text!r}: every ratio must lie in (0, 1]")
    return keeps


def main(argv: list[str] | None = None, prog: str = "evtp bench vllm") -> int:
    p = parser(prog, bench.__doc__, epilog="\n\n".join(bench.__doc__.split("\n\n")[1:]))
    p.add_argument("--keep", default="1.0,0.5,0.2,0.1", help="comma-separated keep ratios")
    p.add_argument("--method", default="evtp", help="selection method (one that needs no attention scores)")
    p.add_argument("--repeats", type=positive_int, default=5, help="single-request repeats per kind (median)")
    p.add_argument("--batch", type=positive_int, default=8, help="requests per throughput batch")
    p.add_argument("--max-tokens", type=positive_int, default=16, help="output tokens per throughput request")
    p.add_argument("--model-dir", default=None, help="use this checkpoint instead of building the random one")
    p.add_argument("--out", type=out_file, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    try:
        config = bench.VllmBenchConfig(keeps=_keeps(args.keep), method=args.method, repeats=args.repeats,
                                       batch=args.batch, max_tokens=args.max_tokens, model_dir=args.model_dir,
                                       out=args.out)
        if config.out is not None:
            bench.prepare_output_file(config.out)
    except SettingsError as exc:
        p.error(str(exc))
    if importlib.util.find_spec("vllm") is None:
        p.error("vLLM is not installed here; run it in .venv-vllm (make venv-vllm)")
    bench.run_vllm_bench(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
