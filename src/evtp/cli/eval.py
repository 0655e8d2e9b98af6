"""``evtp eval`` (and ``python -m evtp.eval``, ``torchrun ... -m evtp.eval``): flags ->
`evtp.eval.run.EvalConfig` -> `evtp.eval.run.run`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evtp.cli.args import HelpFormatter, keep, positive_float, positive_int
import evtp.eval.run as eval_run
from evtp.settings import parse_options


def build_parser(prog: str = "evtp eval") -> argparse.ArgumentParser:
    from evtp.data import DATASETS
    from evtp.models import MODELS
    from evtp.selection import METHODS

    p = argparse.ArgumentParser(
        prog=prog, description=eval_run.__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
        epilog="Values of KEY=VALUE options are read as JSON when they parse (true, 0.5, \"a b\") and as "
               "text otherwise. Nothing is written to --out until every setting has been checked. "
               "More: docs/evaluation.md.")
    p.add_argument("--model", required=True, metavar="NAME",
                   help=f"{', '.join(sorted(MODELS))}, or module:factory for your own IVSModel")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="keyword argument of the model factory (repeatable), e.g. device=cuda "
                        "(cpu, cuda, cuda:N, auto), dtype=bfloat16, weights=PATH")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS), metavar="NAME",
                   help=f"one of: {', '.join(sorted(DATASETS))}")
    p.add_argument("--root", default=None, help="the data set folder (see docs/benchmarks/); not "
                                                "taken by synthetic-image / synthetic-video")
    p.add_argument("--split", required=True, help="the benchmark split, e.g. val, testA, valid_u "
                                                  "(an unknown one is refused with the valid list)")
    p.add_argument("--dataset-option", action="append", metavar="KEY=VALUE",
                   help="reader option (repeatable), e.g. image_dir=PATH, all_texts=true, n=500")
    p.add_argument("--method", default="evtp", metavar="METHOD",
                   help=f"selection method, optionally with its options in brackets, e.g. "
                        f"evtp[saliency_weight=4]; one of: {', '.join(sorted(METHODS))}")
    p.add_argument("--keep", type=keep, default=0.2,
                   help="visual-token budget: a ratio in (0, 1] written with a dot (0.2, 1.0) or a "
                        "token count (64)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="option of the method, or keyword of the model's predict (repeatable)")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run directory (created; the same command with the same --out resumes)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N samples")
    p.add_argument("--retry-failed", action="store_true", help="re-run samples recorded as failed")
    p.add_argument("--save-masks", action="store_true",
                   help="store the predicted masks as COCO RLE in each record")
    p.add_argument("--summary-only", action="store_true",
                   help="only merge the records of --out and rewrite the summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dist-timeout-min", type=positive_float, default=24 * 60,
                   help="torchrun only: how long rank 0 waits for the slowest rank (minutes)")
    return p


def config_from_args(args: argparse.Namespace, prog: str) -> eval_run.EvalConfig:
    """The run's settings; KEY=VALUE lists parsed (`evtp.settings.parse_options`)."""
    return eval_run.EvalConfig(
        model=args.model, dataset=args.dataset, split=args.split, out=Path(args.out), root=args.root,
        model_options=parse_options(args.model_option, "--model-option"),
        dataset_options=parse_options(args.dataset_option, "--dataset-option"),
        method=args.method, keep=args.keep, options=parse_options(args.option, "--option"),
        limit=args.limit, retry_failed=args.retry_failed, save_masks=args.save_masks,
        summary_only=args.summary_only, progress=not args.no_progress,
        dist_timeout_min=args.dist_timeout_min, prog=prog)


def main(argv: list[str] | None = None, prog: str = "evtp eval") -> int:
    """Exit status: 0 done, 1 every sample failed, 2 bad settings (nothing run or written),
    130 interrupted (re-running the same command resumes)."""
    args = build_parser(prog).parse_args(argv)
    try:
        return eval_run.run_eval(config_from_args(args, prog))
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; the finished samples are kept in {args.out}: run the same "
              f"command again to resume", file=sys.stderr)
        return eval_run.EXIT_INTERRUPTED
    except eval_run.SETTINGS_ERRORS as exc:
        print(f"{prog}: error: {eval_run.one_line(exc)}", file=sys.stderr)
        return eval_run.EXIT_SETTINGS


if __name__ == "__main__":
    raise SystemExit(main())
