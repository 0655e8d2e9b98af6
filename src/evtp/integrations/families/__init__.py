"""One module per model family; importing this package registers them all (`register_family`)."""
from evtp.integrations.families import gemma3, internvl, llava, paligemma, qwen3_vl, qwen_vl, sa2va  # noqa: F401
