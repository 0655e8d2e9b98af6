"""Evaluation runs: `evtp eval` (resumable, sharded across torchrun ranks) and their summaries."""
from evtp.eval.records import RecordWriter, read_records
from evtp.eval.run import evaluate_sample, finalize, main, resolve_model
from evtp.eval.summary import build_summary, summary_markdown

__all__ = ["main", "evaluate_sample", "finalize", "resolve_model", "build_summary",
           "summary_markdown", "RecordWriter", "read_records"]
