"""``evtp bench transformers``: flags -> `evtp.bench.transformers.TransformersBenchConfig` ->
`evtp.bench.transformers.run_transformers_bench`."""
from __future__ import annotations

from evtp.bench import transformers as bench
from evtp.cli.args import keep_ratios, non_negative_int, out_file, parser, positive_int
from evtp.settings import SettingsError


def main(argv: list[str] | None = None, prog: str = "evtp bench transformers") -> int:
    p = parser(prog, bench.__doc__, epilog="\n\n".join(bench.__doc__.split("\n\n")[1:]))
    p.add_argument("--keep", type=keep_ratios, default=keep_ratios("1.0,0.5,0.2,0.1"), metavar="R,R,...",
                   help="comma-separated keep ratios (1.0 = unpatched model) (default: 1.0,0.5,0.2,0.1)")
    p.add_argument("--method", default="evtp", help="selection method (a score-free one)")
    p.add_argument("--model", choices=sorted(bench.MODELS), default="smollm2",
                   help="smollm2: real SmolLM2 weights (test support adds tiny: a tiny random model)")
    p.add_argument("--video", action="store_true",
                   help="Sa2VA's video shape: --frames frames x 256 tokens (InternViT-300M-shaped random "
                        "tower at 448 px, pixel shuffle) instead of one 576-token image")
    p.add_argument("--frames", type=positive_int, default=5, help="frames of the --video prompt")
    p.add_argument("--repeats", type=positive_int, default=5, help="measured repeats per ratio (median)")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="unmeasured rounds first")
    p.add_argument("--decode-tokens", type=positive_int, default=16, help="greedy decode steps measured")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=out_file, default=None, help="write results.json here (updated after every round)")
    args = p.parse_args(argv)
    try:
        config = bench.TransformersBenchConfig(
            keeps=tuple(args.keep), method=args.method, model=args.model, video=args.video, frames=args.frames,
            repeats=args.repeats, warmup=args.warmup, decode_tokens=args.decode_tokens, threads=args.threads,
            out=args.out)
        if config.out is not None:
            bench.prepare_output_file(config.out)
    except SettingsError as exc:
        p.error(str(exc))
    bench.run_transformers_bench(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
