"""``evtp demo``: flags -> `evtp.demo.DemoConfig` -> `evtp.demo.run_demo`."""
from __future__ import annotations

from pathlib import Path

from evtp import demo
from evtp.cli.args import fraction, parser, positive_int
from evtp.eval.records import prepare_output_dir
from evtp.settings import SettingsError


def main(argv: list[str] | None = None, prog: str = "evtp demo") -> int:
    ap = parser(prog, demo.__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo_out", help="folder for PNGs and JSON (created)")
    ap.add_argument("--keep", type=fraction, default=0.2, help="fraction of the visual tokens kept, in (0, 1]")
    ap.add_argument("--samples", type=positive_int, default=9,
                    help="synthetic test scenes for the reference-model part; the examples are the "
                         "median ones of these")
    ap.add_argument("--repeats", type=positive_int, default=5,
                    help="interleaved timed runs per setting of each example (medians are printed)")
    a = ap.parse_args(argv)
    try:
        prepare_output_dir(a.out)
        config = demo.DemoConfig(out=Path(a.out), keep=a.keep, samples=a.samples, repeats=a.repeats)
    except SettingsError as exc:
        ap.error(str(exc))
    demo.run_demo(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
