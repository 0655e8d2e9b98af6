"""Evaluation runs: `evtp eval` (resumable, sharded across torchrun ranks) and their summaries."""
from evtp.eval.records import RecordWriter, read_records
from evtp.eval.run import EvalConfig, evaluate_sample, finalize, resolve_model, run_eval
from evtp.eval.summary import build_summary, summary_markdown

__all__ = ["EvalConfig", "run_eval", "evaluate_sample", "finalize", "resolve_model", "build_summary",
           "summary_markdown", "RecordWriter", "read_records"]
