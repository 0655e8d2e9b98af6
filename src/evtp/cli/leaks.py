"""`evtp leaks reference`: the leak checks of a reference-model readout (keep 0, word swap,
shuffled positions, another image; `evtp.models.reference.leaks`), as JSON."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from evtp.cli.args import parser, positive_int
from evtp.models.reference.config import READOUTS


def main(argv: list[str] | None = None, prog: str = "evtp leaks reference") -> int:
    from evtp.models.reference import leaks

    ap = parser(prog, __doc__)
    ap.add_argument("--readout", choices=READOUTS, default=None,
                    help="readout to check (default: the weights' primary readout)")
    ap.add_argument("--images", type=positive_int, default=100, help="val images (and attribute images for swaps)")
    ap.add_argument("--split", choices=("train", "val", "test"), default="val", help="benchmark split")
    ap.add_argument("--weights", default=None, help="model directory (default: the shipped weights)")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    from evtp.models.reference import load_pretrained

    torch.set_num_threads(args.threads)
    model = load_pretrained(args.weights)
    try:
        model.check_readout(args.readout)
    except ValueError as err:
        ap.error(str(err))
    report = leaks.leak_report(model, args.images, split=args.split, readout=args.readout)
    report["weights"] = str(args.weights or "shipped")
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0
