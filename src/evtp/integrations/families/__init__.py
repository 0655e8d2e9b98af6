"""One module per model family; importing this package registers them all (`register_family`)."""
from evtp.integrations.families import (gemma3, glm4v, idefics3, internvl, llama4, llava,  # noqa: F401
                                        llava_next, mistral3, paligemma, qwen3_vl, qwen_vl, sa2va)
