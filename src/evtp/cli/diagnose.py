"""`evtp diagnose reference`: where the reference model's errors come from, per expression family
(the dense readout's prompt; `evtp.models.reference.diagnose`)."""
from __future__ import annotations

from evtp.cli.args import non_negative_int, parser, positive_int


def main(argv: list[str] | None = None, prog: str = "evtp diagnose reference") -> int:
    from evtp.models.reference import diagnose

    ap = parser(prog, __doc__)
    ap.add_argument("--weights", default=None, help="weights directory (None: the shipped ones)")
    ap.add_argument("--images", type=non_negative_int, default=60, help="validation images")
    ap.add_argument("--videos", type=non_negative_int, default=12, help="validation videos")
    ap.add_argument("--seed-offset", type=int, default=0, help="shift of the split's seed range")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (None: torch's)")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.images + args.videos == 0:
        ap.error("--images and --videos are both 0: nothing to diagnose")
    diagnose.run_diagnosis(args.weights, args.images, args.videos, args.seed_offset, args.threads, args.out)
    return 0
