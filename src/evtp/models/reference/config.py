"""Configuration and tokenizer of the reference model (saved next to the weights as JSON)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from evtp.data.synthetic import COLORS, SHAPES, VOCAB_WORDS

SPECIALS = ("[PAD]", "[BOS]", "[SEG]", "[UNK]")
READOUTS = ("point", "seg", "dense")  # how a mask is read from the LM (docs/reference_model.md)
N_COLOR_CLASSES = len(COLORS) + 1  # + background
N_SHAPE_CLASSES = len(SHAPES) + 1
# options that were removed, each with the one value that remains (configs saved with the key still
# load when it holds that value) and what the model always does now
REMOVED_OPTIONS = {
    "lm_rope": ("mrope", "the LM always uses Qwen2-VL's multimodal RoPE"),
    "lm_attention": ("prefix", "the LM always uses the prefix-LM attention mask"),
    "vit_stem": ("conv", "the ViT always has the convolutional stem"),
    "appearance_prompt": (False, "the mask decoder has no appearance FiLM"),
}


@dataclass
class ReferenceConfig:
    """Plain-data model configuration (saved next to the weights as JSON). The defaults are the
    shipped weights' recipe (``evtp/weights/reference.json``'s "config", vocabulary aside);
    ``configs/*.json`` hold what other stages and probes differ by."""

    image_size: int = 256
    patch: int = 16
    frames: int = 8  # frames per video the mask decoder segments
    lm_frames: tuple[int, ...] = (0, 2, 4, 5, 7)  # video frames the LM reads (5, as Sa2VA: 1280 tokens)
    vit_dim: int = 128
    vit_layers: int = 2
    vit_heads: int = 4
    vit_mlp: int = 256
    lm_dim: int = 192
    lm_layers: int = 6
    lm_heads: int = 4
    lm_mlp: int = 512
    # base of the LM's rotary positions (Qwen2-VL's multimodal RoPE, see ``lm_mrope_section``):
    # positions span only ~35 (instruction + 16 rows / columns); 50 gives the column section (the
    # lowest frequencies) 0.4-1.5 rad across the 16 columns, so that "left of" is a smooth
    # function of the offset
    lm_rope_theta: float = 50.0
    # M-RoPE frequency pairs for (t, h, w), summing to head_dim / 2; None: a sixth to t (5 frames
    # need few), the rest to h and w (24 pairs at the default width: 4, 10, 10)
    lm_mrope_section: tuple[int, ...] | None = None
    dec_dim: int = 24
    # training-only intermediate supervision: after this LM layer (0 = none), a head reads every
    # visual token's state and predicts whether it lies on a member of the expression's reference
    # set and on its anchor object (the two steps a relational expression is solved in)
    role_layer: int = 3
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
    align_layers: tuple[int, ...] = (0, 1, 3, 5)
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
        for name in ("lm_frames", "vocab", "align_layers", "readouts"):  # lists from JSON or callers
            setattr(self, name, tuple(getattr(self, name)))
        if self.lm_mrope_section is not None:
            self.lm_mrope_section = tuple(self.lm_mrope_section)
        bad = [r for r in self.readouts if r not in READOUTS]
        if bad or not self.readouts or len(set(self.readouts)) != len(self.readouts):
            raise ValueError(f"readouts must be distinct names of {', '.join(READOUTS)}, got {list(self.readouts)}")
        if not 2 <= self.point_bins <= self.image_size:
            raise ValueError(f"point_bins must be in 2 .. image_size={self.image_size}, got {self.point_bins}")
        if not 0 <= self.role_layer <= self.lm_layers:
            raise ValueError(f"role_layer must be in 0 .. lm_layers={self.lm_layers}, got {self.role_layer}")
        bad = [layer for layer in self.align_layers if not 0 <= layer <= self.lm_layers]
        if bad or len(set(self.align_layers)) != len(self.align_layers):
            raise ValueError(f"align_layers must be distinct depths in 0 .. lm_layers={self.lm_layers}, "
                             f"got {list(self.align_layers)}")
        if self.temporal_patch not in (1, 2):
            raise ValueError(f"temporal_patch must be 1 or 2, got {self.temporal_patch}")
        if self.align_motion and (self.temporal_patch != 2 or not self.align_layers):
            raise ValueError("align_motion needs temporal_patch=2 (the token must see the next frame) and "
                             f"align_layers to align at; got temporal_patch={self.temporal_patch}, "
                             f"align_layers={list(self.align_layers)}")

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
        for name, value in d.items():
            if isinstance(value, tuple):
                d[name] = list(value)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ReferenceConfig":
        """The configuration saved with weights (`to_json`). A key of a removed option
        (`REMOVED_OPTIONS`) is accepted only with the one value that remains and refused with any
        other; other unknown keys are refused. A config without ``readouts`` is of weights trained
        before readouts existed, i.e. for the "dense" one (``runs/v2/ckpt.pt``, the point stage's
        ``--init``)."""
        d = dict(d)
        for key, (kept, what) in REMOVED_OPTIONS.items():
            if key in d and d[key] != kept:
                raise ValueError(f"{key}={d[key]!r} in this saved config: the option was removed ({what}); "
                                 f"only {key}={kept!r} loads, so these weights need retraining with the present code")
            d.pop(key, None)
        d.setdefault("readouts", ("dense",))
        return cls(**d)


class WordTokenizer:
    """Word-level tokenizer over the benchmark vocabulary (unknown words map to ``[UNK]``)."""

    def __init__(self, vocab: tuple[str, ...]):
        self.vocab = tuple(vocab)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad, self.bos, self.seg, self.unk = (self.ids[s] for s in SPECIALS)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, self.unk) for w in text.lower().split()]
