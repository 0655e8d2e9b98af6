"""One module per model family; `ADAPTERS` lists every adapter class (the registry above them,
`evtp.integrations.registry`, registers them under their ``core_names``)."""
from evtp.integrations.families.gemma3 import Gemma3
from evtp.integrations.families.glm4v import Glm4v, Glm4vMoe, Glm46V, GlmOcr
from evtp.integrations.families.idefics3 import Idefics3, SmolVLM
from evtp.integrations.families.internvl import InternVL
from evtp.integrations.families.llama4 import Llama4
from evtp.integrations.families.llava import Llava
from evtp.integrations.families.llava_next import LlavaNext, LlavaOnevision
from evtp.integrations.families.mistral3 import Mistral3
from evtp.integrations.families.paligemma import PaliGemma
from evtp.integrations.families.qwen3_vl import Qwen3_5, Qwen3VL, Qwen3VLMoe
from evtp.integrations.families.qwen_vl import Qwen2_5_VL, Qwen2VL
from evtp.integrations.families.sa2va import Sa2VAInternVL

ADAPTERS = (Llava, LlavaNext, LlavaOnevision, Qwen2VL, Qwen2_5_VL, Qwen3VL, Qwen3VLMoe, Qwen3_5, InternVL, Idefics3,
            SmolVLM, Mistral3, Gemma3, Sa2VAInternVL, PaliGemma, Glm4v, Glm4vMoe, Glm46V, GlmOcr, Llama4)
