"""``evtp bench throughput``: flags -> `evtp.bench.throughput.ThroughputConfig` ->
`evtp.bench.throughput.run_throughput`."""
from __future__ import annotations

from evtp.bench import throughput as bench
from evtp.cli.args import out_file, parser, positive_int
from evtp.selection import METHODS
from evtp.settings import SettingsError, parse_keeps, parse_methods


def _batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise SettingsError(f"--batch {text!r}: give positive batch sizes, e.g. 1,4,16") from None
    if not batches or min(batches) < 1:
        raise SettingsError(f"--batch {text!r}: give positive batch sizes, e.g. 1,4,16")
    return batches


def main(argv: list[str] | None = None, prog: str = "evtp bench throughput") -> int:
    ap = parser(prog, bench.__doc__)
    ap.add_argument("--task", choices=("image", "video"), default="image", help="benchmark task")
    ap.add_argument("--split", choices=("train", "val", "test"), default="test", help="benchmark split")
    ap.add_argument("--batch", default="1,4,16", help="comma-separated batch sizes")
    ap.add_argument("--methods", default="evtp", help="as in `evtp bench reference`, e.g. "
                                                      "evtp,evtp[saliency_weight=4],dpp; methods: "
                                                      f"{', '.join(sorted(METHODS))}")
    ap.add_argument("--keep", default="1.0,0.2", help="comma-separated keep ratios (with a dot) or "
                                                      "counts; 1.0 (the speed-up baseline) is added "
                                                      "when missing")
    ap.add_argument("--repeats", type=positive_int, default=5,
                    help="timed rounds per batch size (each run of a configuration follows one untimed run of it)")
    ap.add_argument("--contiguous", action="store_true",
                    help="re-index kept tokens contiguously instead of keeping their original positions")
    ap.add_argument("--out", type=out_file, default="results/throughput_image.json", help="results JSON")
    ap.add_argument("--weights", default=None, help="model directory (default: the shipped weights; "
                                                    "random-tiny: a tiny untrained model, for tests)")
    ap.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    ap.add_argument("--no-plots", action="store_true", help="no PNG plot")
    args = ap.parse_args(argv)
    try:
        config = bench.ThroughputConfig(
            methods=tuple(parse_methods(args.methods)), keeps=tuple(parse_keeps(args.keep, allow_zero=True)),
            batches=_batches(args.batch), task=args.task, split=args.split, repeats=args.repeats,
            contiguous=args.contiguous, out=args.out, weights=args.weights, threads=args.threads,
            plots=not args.no_plots)
        bench.prepare_output_file(config.out)
    except SettingsError as exc:
        ap.error(str(exc))
    command = " ".join([prog, *(argv if argv is not None else [])])
    try:
        bench.run_throughput(config, command)
    except SettingsError as exc:  # --out holding a run with other settings
        ap.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
