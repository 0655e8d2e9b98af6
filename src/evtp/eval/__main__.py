"""``python -m evtp.eval ...`` and ``torchrun --nproc_per_node N -m evtp.eval ...``."""
from evtp.cli.eval import main

raise SystemExit(main(prog="python -m evtp.eval"))
