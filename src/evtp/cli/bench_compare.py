"""``evtp bench compare``: flags -> `evtp.bench.compare.CompareConfig` ->
`evtp.bench.compare.compare_runs` -> the JSON and the markdown tables."""
from __future__ import annotations

from pathlib import Path

from evtp.bench import compare as bench
from evtp.bench.report import write_compare_tables
from evtp.cli.args import non_negative_int, out_file, parser, positive_float, positive_int
from evtp.eval.records import prepare_output_file, write_json_atomic
from evtp.settings import SettingsError


def _parser(prog: str):
    ap = parser(prog, bench.__doc__)
    ap.add_argument("runs", nargs="+", type=Path, metavar="RUN.json",
                    help="results JSONs of `evtp bench reference` (one per training seed; each run's "
                         "records file RUN.records.jsonl next to it)")
    ap.add_argument("--reference", default="evtp",
                    help="the method (as labelled in the runs, e.g. evtp[saliency_weight=4]) every other "
                         "method is contrasted with")
    ap.add_argument("--margin", type=positive_float, default=0.01, help="non-inferiority margin (score units)")
    ap.add_argument("--alpha", type=positive_float, default=0.05, help="family-wise error rate of each table")
    ap.add_argument("--boot", type=positive_int, default=10000,
                    help="bootstrap replicates (Holm's smallest levels read far into the tails)")
    ap.add_argument("--seed", type=non_negative_int, default=0, help="seed of the bootstrap draws")
    ap.add_argument("--out", type=out_file, default="results/compare.md",
                    help="markdown tables; the JSON with everything goes next to it (.json)")
    return ap


def main(argv: list[str] | None = None, prog: str = "evtp bench compare") -> int:
    ap = _parser(prog)
    a = ap.parse_args(argv)
    try:
        config = bench.CompareConfig(runs=tuple(a.runs), reference=a.reference.replace(" ", ""), margin=a.margin,
                                     alpha=a.alpha, n_boot=a.boot, seed=a.seed, out=a.out)
        prepare_output_file(config.out)
        result = bench.compare_runs(config)
    except SettingsError as exc:
        ap.error(str(exc))
    write_json_atomic(config.json_out, result)
    write_compare_tables(result, config.out, " ".join([prog, *(argv if argv is not None else [])]))
    print(Path(config.out).read_text())
    print(f"wrote {config.out}, {config.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
