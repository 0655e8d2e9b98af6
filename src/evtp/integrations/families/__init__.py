"""One module per model family; importing this package registers them all (`register_family`)."""
from evtp.integrations.families import (gemma3, internvl, llava, llava_next, paligemma, qwen3_vl,  # noqa: F401
                                        qwen_vl, sa2va)
