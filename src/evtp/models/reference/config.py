"""Configuration and tokenizer of the reference model (saved next to the weights as JSON)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from evtp.data.synthetic import COLORS, SHAPES, VOCAB_WORDS

SPECIALS = ("[PAD]", "[BOS]", "[SEG]", "[UNK]")
READOUTS = ("point", "seg", "dense")  # how a mask is read from the LM (docs/reference_model.md)
N_COLOR_CLASSES = len(COLORS) + 1  # + background
N_SHAPE_CLASSES = len(SHAPES) + 1


@dataclass
class ReferenceConfig:
    """Plain-data model configuration (saved next to the weights as JSON)."""

    image_size: int = 256
    patch: int = 16
    frames: int = 8  # frames per video the mask decoder segments
    lm_frames: tuple[int, ...] = (0, 2, 4, 5, 7)  # video frames the LM reads (5, as Sa2VA: 1280 tokens)
    vit_dim: int = 128
    vit_layers: int = 2
    vit_heads: int = 4
    vit_mlp: int = 256
    # "conv": four stride-2 3x3 convolutions make the 16 x 16 patches (a convolutional stem, as in
    # Xiao et al. 2021, "Early convolutions help transformers see better"); "linear": one 16 x 16
    # linear patch embedding (the original ViT)
    vit_stem: str = "conv"
    lm_dim: int = 192
    lm_layers: int = 6
    lm_heads: int = 4
    lm_mlp: int = 512
    # "1d": Llama's rotary positions, one index per token (visual tokens in raster order, so a
    # token's left neighbour is 1 away and the one above it 16); "mrope": Qwen2-VL's multimodal
    # RoPE, visual tokens at (frame, row, column), each rotating its own share of every head's
    # frequencies (``lm_mrope_section``, pairs of dims for t, h, w), text at (i, i, i). The default
    # is "1d" so that weights saved without this key load as trained; `make train` sets "mrope"
    lm_rope: str = "1d"
    # RoPE base. "1d": Qwen2's 1e6 rather than Llama-2's 1e4, so that the low-frequency half of
    # each head still matches content across 1,300 positions. "mrope": positions span only ~35
    # (instruction + 16 rows / columns); 50 gives the column section (the lowest frequencies)
    # 0.4-1.5 rad across the 16 columns, so that "left of" is a smooth function of the offset
    lm_rope_theta: float = 1e6
    # M-RoPE frequency pairs for (t, h, w), summing to head_dim / 2; None: a sixth to t (5 frames
    # need few), the rest to h and w (24 pairs at the default width: 4, 10, 10)
    lm_mrope_section: tuple[int, ...] | None = None
    dec_dim: int = 24
    # "prefix": the prefix ([BOS], instruction, visual tokens) attends to itself bidirectionally and
    # [SEG] attends to everything, as in PaliGemma's prefix-LM; "causal": LLaVA-style causal attention
    lm_attention: str = "prefix"
    # FiLM of the mask decoder by an appearance embedding read from [SEG]. Off by default: with it,
    # the decoder could pick objects by colour / shape from the words alone, i.e. choose the
    # object itself instead of segmenting what the LM's prompt points at
    appearance_prompt: bool = False
    # training-only intermediate supervision: after this LM layer (0 = none), a head reads every
    # visual token's state and predicts whether it lies on a member of the expression's reference
    # set and on its anchor object (the two steps a relational expression is solved in)
    role_layer: int = 0
    # frames per LM visual token, as Qwen2-VL's temporal patch: 1 = one frame; 2 = the token of
    # frame f also carries how the ViT features at its patch change to the next frame
    # (v[a+1] - v[a], a = min(f, T-2); zero for images), which makes local motion visible to the
    # LM without matching objects across frames. The ViT encodes every frame anyway (the mask
    # decoder reads them), so it costs only the projector's wider input
    temporal_patch: int = 1
    # training-only word-space alignment (LLaVA's projector-alignment idea, kept inside the LM):
    # at each listed depth (0 = the projector's output, i.e. the visual tokens the LM reads;
    # l >= 1 = the LM's state after layer l, through a parameter-free layer norm) every visual
    # token on an object is read through the LM's own input word-embedding matrix E,
    # ``logits = h @ E^T / sqrt(lm_dim)``, and trained toward its object's colour word and shape
    # word. Visual tokens then speak the words the instruction is made of, and keep them inside
    # the LM
    align_layers: tuple[int, ...] = ()
    # training-only, video, needs temporal_patch=2 and align_layers: at the same depths, every
    # video token on an object is also aligned to the word of its object's motion between frames
    # a and a+1 (a = min(f, T-2), the frames its temporal patch compares): "left", "right", "up",
    # "down", or "not" (as in "does not move") when it stands still there
    align_motion: bool = False
    vocab: tuple[str, ...] = field(default_factory=lambda: SPECIALS + VOCAB_WORDS)
    # the readouts these weights were trained for (`READOUTS`); the first is the one used by default.
    # "point" (Seg-Zero style): after [SEG] the LM writes the target's location as two tokens,
    # ``<xI>`` and ``<yJ>`` (``point_bins`` bins per axis), and a frozen exact segmenter returns
    # the object under that point (`evtp.models.reference.segmenter`); "dense" (Text4Seg-style): the
    # mask decoder reads a heat map made of per-kept-token logits; "seg" (LISA / Sa2VA style): the
    # ``[SEG]`` state, projected, is the only prompt of a class-agnostic promptable decoder
    # (`evtp.models.reference.prompt_decoder`), pretrained on ground-truth prompts and then frozen
    readouts: tuple[str, ...] = ("point", "dense")
    point_bins: int = 16
    # the "seg" readout's promptable decoder: width (= the prompt's), attention heads, two-way blocks
    seg_dim: int = 32
    seg_heads: int = 2
    seg_layers: int = 2

    def __post_init__(self):
        bad = [r for r in self.readouts if r not in READOUTS]
        if bad or not self.readouts or len(set(self.readouts)) != len(self.readouts):
            raise ValueError(f"readouts must be distinct names of {', '.join(READOUTS)}, got {list(self.readouts)}")
        if not 2 <= self.point_bins <= self.image_size:
            raise ValueError(f"point_bins must be in 2 .. image_size={self.image_size}, got {self.point_bins}")

    @property
    def location_words(self) -> tuple[str, ...]:
        """The location tokens ``<x0> .. <xN-1> <y0> .. <yN-1>`` (N = point_bins; none without "point")."""
        if "point" not in self.readouts:
            return ()
        return tuple(f"<{a}{i}>" for a in "xy" for i in range(self.point_bins))

    @property
    def token_vocab(self) -> tuple[str, ...]:
        """The LM's vocabulary: the words, then the location tokens."""
        return tuple(self.vocab) + self.location_words

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    def to_json(self) -> dict:
        d = asdict(self)
        d["lm_frames"] = list(self.lm_frames)
        if self.lm_mrope_section is not None:
            d["lm_mrope_section"] = list(self.lm_mrope_section)
        d["vocab"] = list(self.vocab)
        d["align_layers"] = list(self.align_layers)
        d["readouts"] = list(self.readouts)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ReferenceConfig":
        d = dict(d)
        d["lm_frames"] = tuple(d["lm_frames"])
        d["vocab"] = tuple(d["vocab"])
        if d.get("lm_mrope_section") is not None:
            d["lm_mrope_section"] = tuple(d["lm_mrope_section"])
        d.setdefault("lm_rope", "1d")
        d.setdefault("lm_attention", "causal")  # weights saved before these options existed
        d.setdefault("vit_stem", "linear")
        d.setdefault("lm_rope_theta", 1e4)
        d.setdefault("appearance_prompt", True)
        d.setdefault("role_layer", 0)
        if d.pop("motion_layer", 0):
            raise ValueError("motion_layer (a training-only motion head) was removed: it lowered validation "
                             "accuracy (docs/reference_model.md, session-7 probes); retrain without it")
        d.setdefault("temporal_patch", 1)
        d["align_layers"] = tuple(d.get("align_layers", ()))
        d.setdefault("align_motion", False)
        d["readouts"] = tuple(d.get("readouts", ("dense",)))  # weights saved before readouts existed
        return cls(**d)


class WordTokenizer:
    """Word-level tokenizer over the benchmark vocabulary (unknown words map to ``[UNK]``)."""

    def __init__(self, vocab: tuple[str, ...]):
        self.vocab = tuple(vocab)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad, self.bos, self.seg, self.unk = (self.ids[s] for s in SPECIALS)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, self.unk) for w in text.lower().split()]
