"""Test support for evtp: tiny random models and their inputs, for evtp's own tests and for
checks on a lent device. **The library never imports this package** (a test enforces it).

* `evtp.testing.families`: one tiny case per supported model family, each derived from a
  released checkpoint's config (values that change the code path kept, sizes shrunk) and fed by
  the family's own processor where it runs without torchvision::

      from evtp.testing.families import tiny_cases
      case = tiny_cases()["qwen2_5_vl"]          # a `TinyCase`
      model = case.build(seed=0)                  # eval mode, float32, random weights
      inputs = case.inputs([[5, ("image", case.image_specs[0]), 6]])   # forward / generate kwargs

* `evtp.testing.register_test_models()`: registers the tiny IVS models (``llava-sam-tiny``) in
  `evtp.models` for tests and test runs of the CLI.
"""
from __future__ import annotations

LLAVA_SAM_TINY_NOTE = "llava-sam-tiny has tiny random weights: its masks and scores are meaningless"


def register_test_models() -> None:
    """Register the test-only models (idempotent): ``llava-sam-tiny`` in `evtp.models` (``evtp eval
    --model llava-sam-tiny``) and ``tiny`` in ``evtp bench transformers``."""
    from evtp.bench import transformers as bench_transformers
    from evtp.models import register_model
    from evtp.testing import bench

    register_model("llava-sam-tiny", "evtp.testing.ivs:load_tiny", LLAVA_SAM_TINY_NOTE)
    bench_transformers.register_model("tiny", bench.load_tiny, bench.load_tiny_video)
