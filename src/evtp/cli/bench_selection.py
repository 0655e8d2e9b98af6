"""``evtp bench selection``: flags -> `evtp.bench.selection.SelectionBenchConfig` ->
`evtp.bench.selection.run_selection_bench`."""
from __future__ import annotations

from evtp.bench import selection as bench
from evtp.cli.args import out_file, parser, positive_int, positive_ints
from evtp.settings import SettingsError


def main(argv: list[str] | None = None, prog: str = "evtp bench selection") -> int:
    ap = parser(prog, bench.__doc__.split("\n")[0])
    ap.add_argument("--n", type=positive_ints, default=",".join(map(str, bench.SIZES_N)), metavar="N,N,...",
                    help="token counts, comma separated")
    ap.add_argument("--d", type=positive_ints, default=",".join(map(str, bench.SIZES_D)), metavar="D,D,...",
                    help="feature sizes, comma separated")
    ap.add_argument("--methods", default=None, help="comma separated (default: every registered method)")
    ap.add_argument("--repeats", type=positive_int, default=5,
                    help="timed runs of every method, interleaved; medians are reported")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--out", type=out_file, default=None,
                    help="write the raw numbers as JSON here (and a .md beside it)")
    a = ap.parse_args(argv)
    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip()) if a.methods else None
    try:
        config = bench.SelectionBenchConfig(n=tuple(a.n), d=tuple(a.d), methods=methods, repeats=a.repeats,
                                            threads=a.threads, device=a.device, out=a.out)
        if a.out is not None:
            bench.prepare_output_file(a.out)
    except SettingsError as exc:
        ap.error(str(exc))
    bench.run_selection_bench(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
