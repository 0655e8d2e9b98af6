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
