"""One module per model family; importing this package registers them all (`register_family`)."""
from evtp.integrations.families import internvl, llava, qwen3_vl, qwen_vl  # noqa: F401
