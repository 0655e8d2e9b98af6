"""``python -m evtp.cli.gpu_check`` (``make gpu-check``): flags -> `evtp.bench.gpu_check.GpuCheckConfig`
-> `evtp.bench.gpu_check.run_gpu_check`.

Exit status: 0 when every part ran and every GPU test passed or skipped, 1 when a part failed, 2
when the device is missing or a flag is wrong (one line saying which, no traceback).
"""
from __future__ import annotations

import sys
from pathlib import Path

from evtp.bench import gpu_check
from evtp.cli.args import parser


def main(argv: list[str] | None = None, prog: str = "gpu-check") -> int:
    ap = parser(prog, gpu_check.__doc__)
    ap.add_argument("--out", type=Path, default=Path("gpu_check"),
                    help="folder for report.json, report.md and the raw selection benchmark")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --tiny: a dry run)")
    ap.add_argument("--parts", default=",".join(gpu_check.PARTS),
                    help=f"comma-separated subset of {', '.join(gpu_check.PARTS)}")
    ap.add_argument("--tiny", action="store_true",
                    help="dry run of the same code: tiny decoder, small selection sizes, few repeats")
    a = ap.parse_args(argv)
    if a.out.exists() and not a.out.is_dir():
        ap.error(f"--out {a.out} is a file; give a folder (created if missing)")
    try:
        config = gpu_check.GpuCheckConfig(out=a.out, device=a.device, tiny=a.tiny,
                                          parts=tuple(p.strip() for p in a.parts.split(",") if p.strip()))
        gpu_check.check_device(config.device)
    except (ValueError, gpu_check.NoDeviceError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    report = gpu_check.run_gpu_check(config)
    failed = [name for name, entry in report.parts.items() if entry["status"] != "ok"]
    print(f"{prog}: report in {a.out / 'report.md'} and {a.out / 'report.json'}"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
