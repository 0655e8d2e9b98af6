"""Shared pieces of the tiny family cases: `TinyCase`, a word-level tokenizer written at test time,
prompt rendering for a family's processor, and padding for the families fed by hand-built tensors.

A tiny case mirrors one released checkpoint (`TinyCase.released`): its config keeps every value
that changes the code path (select strategy, feature layer, token ids and vocabulary size, grid
pinpoints, merge / shuffle sizes, rope sections, tokens per image, tile layout) and shrinks only
sizes (widths, depths, image sizes). Nothing is downloaded: the tokenizer is built from a word
list, the processors from their classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

WORDS = 100  # prompt text: int i (0 <= i < WORDS) is the word "w{i}" ...
FIRST_WORD = 100  # ... with token id FIRST_WORD + i
VOCAB = 256  # every tiny vocabulary: the words, then the family's special tokens (ids 200 ..)
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024)


def text_id(i: int) -> int:
    """Token id of the prompt word ``w{i}``."""
    return FIRST_WORD + i


@dataclass
class TinyCase:
    """A tiny random build of one family and the inputs its processor gives (built in < 1 s).

    Attributes:
        kind: short name ("llava", "qwen3_vl_moe", ...), the test id.
        released: the released checkpoint whose config.json the tiny config mirrors.
        build: ``build(seed=0, attn_implementation="sdpa") -> model`` (eval mode, float32).
        inputs: ``inputs(prompts, seed=0, padding_side="left") -> dict`` of forward / ``generate``
            kwargs. A prompt is a list of ints (words ``w0 .. w99``) and ("image", spec) /
            ("video", spec) items, rendered as the family's prompt text and run through its
            processor (or, where the processor needs torchvision, through the same steps by hand).
        image_specs: (small, large) image specs, so that batches mix token counts.
        video_spec: a video spec, or None when the family has no video input.
        selectable: ``selectable(spec) -> int``, the prunable visual tokens of one image / video of
            that spec (one selection group); ``selectable(spec, "video")`` for videos.
        placeholder_ids: the ids whose positions are visual tokens (for counting in tests).
        text_id: ``text_id(i)``, the token id of the prompt word ``w{i}``.
        processor: "the family's processor" or what was built by hand and why (docs).
        always_kept: names of what is inside the visual span and never pruned (newline, CLS ...).
        rope_rows: 1 for 1-D positions, 3 for M-RoPE.
        several_images: whether a prompt may hold more than one image (each its own budget).
        generated_token_type: ``token_type_ids`` value of generated tokens (PaliGemma: 1, suffix).
        video_with_images: whether one call may hold images and videos together.
        embeds_with_pixels: whether the model takes ``pixel_values`` with ``inputs_embeds``.
        keeps: the released config values the tiny config keeps (docs).
        notes: what the tiny build leaves out.
    """

    kind: str
    released: str
    build: Callable[..., Any]
    inputs: Callable[..., dict]
    image_specs: tuple
    selectable: Callable[..., int]
    placeholder_ids: tuple
    text_id: Callable[[int], int]
    processor: str
    video_spec: Any = None
    always_kept: tuple = ()
    rope_rows: int = 1
    several_images: bool = True
    generated_token_type: int = 0
    video_with_images: bool = True
    embeds_with_pixels: bool = True
    keeps: str = ""
    notes: str = ""


def word_tokenizer(special: dict[str, int], *, pad: str, vocab_size: int = VOCAB, first_word: int = FIRST_WORD,
                   **named):
    """A `PreTrainedTokenizerFast` whose vocabulary is the prompt words ``w0 .. w99`` (ids
    ``first_word ..``) and the family's ``special`` tokens at the ids its tiny config names.

    Whitespace separates words; special tokens are matched anywhere (processors write runs of
    placeholders with no space between them). ``named``: tokenizer attributes such as
    ``image_token="<image>"`` (processors read them), each also a special token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": first_word + i for i in range(WORDS)}
    clash = set(vocab.values()) & set(special.values())
    if clash or max([*vocab.values(), *special.values()]) >= vocab_size:
        raise ValueError(f"word ids {first_word}..{first_word + WORDS - 1} clash with special ids {sorted(clash)} "
                         f"or exceed vocab_size={vocab_size}")
    vocab.update(special)
    vocab.setdefault("<unk>", vocab_size - 1)
    vocab.setdefault(SPLICE, vocab_size - 2)
    special = dict(special, **{SPLICE: vocab[SPLICE]})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token=pad,
                                   extra_special_tokens=dict(named) or None)
    fast.add_special_tokens({"additional_special_tokens": list(special)}, replace_extra_special_tokens=False)
    if any(fast.convert_tokens_to_ids(t) != i for t, i in special.items()):
        raise RuntimeError("the word tokenizer renumbered a special token")
    return fast


SPLICE = "<|splice|>"  # stands for hand-built media in the text a processor sees (`splice`)


def splice(out: dict, tokenizer, runs: list, *, padding_side: str, values: dict | None = None) -> dict:
    """Replace every `SPLICE` token of a processor's output by the next run of token ids in
    ``runs`` (row-major), re-padding the batch; for media the processor cannot make (its video
    processor needs torchvision). ``values``: per-token input name -> ``fill(run) -> list`` (e.g.
    ``mm_token_type_ids`` of a video run); other per-token inputs take 0 on the run.
    """
    marker = tokenizer.convert_tokens_to_ids(SPLICE)
    ids, mask = out["input_ids"], out["attention_mask"].bool()
    per_token = [k for k, v in out.items() if isinstance(v, torch.Tensor) and v.shape == ids.shape
                 and k not in ("input_ids", "attention_mask")]
    queue = list(runs)
    seqs, extra = [], {k: [] for k in per_token}
    for b in range(ids.shape[0]):
        row, vals = [], {k: [] for k in per_token}
        for j in torch.nonzero(mask[b]).flatten().tolist():
            if int(ids[b, j]) == marker:
                run = queue.pop(0)
                row += run
                for k in per_token:
                    vals[k] += (values or {}).get(k, lambda r: [0] * len(r))(run)
            else:
                row.append(int(ids[b, j]))
                for k in per_token:
                    vals[k].append(int(out[k][b, j]))
        seqs.append(row)
        for k in per_token:
            extra[k].append(vals[k])
    new = dict(out)
    new["input_ids"], new["attention_mask"] = pad(seqs, padding_side, pad_id=tokenizer.pad_token_id)
    for k in per_token:
        new[k] = pad(seqs, padding_side, extra[k])[2].to(out[k].dtype)
    return new


def render(prompt: list, media: Callable[[tuple], str]) -> str:
    """Prompt text: int i -> ``w{i}``, a media item -> ``media(item)`` (the family's image / video
    marker, which its processor expands)."""
    return " ".join(f"w{it}" if isinstance(it, int) else media(it) for it in prompt)


def pixels(seed: int, *shape: int) -> np.ndarray:
    """Random uint8 pixels that depend only on ``seed`` and ``shape``: an image has the same pixels
    in a batch and alone (the batch-equals-alone tests rely on it)."""
    return np.random.default_rng([seed, *shape]).integers(0, 256, shape, dtype=np.uint8)


def randn(seed: int, *shape: int, salt: int = 0) -> torch.Tensor:
    """Standard-normal float32 values that depend only on ``seed``, ``shape`` and ``salt`` (hand-built
    pixel tensors, same in a batch and alone)."""
    return torch.from_numpy(np.random.default_rng([seed, salt, *shape]).standard_normal(shape, dtype=np.float32))


def image(height: int, width: int, seed: int = 0):
    """A random RGB PIL image of ``height`` x ``width`` pixels (`pixels`)."""
    from PIL import Image

    return Image.fromarray(pixels(seed, height, width, 3))


def media_items(prompts: list[list], what: str) -> list:
    return [it for p in prompts for it in p if not isinstance(it, int) and it[0] == what]


def per_row(prompts: list[list], what: str) -> list[list]:
    return [[it for it in p if not isinstance(it, int) and it[0] == what] for p in prompts]


def run_processor(processor, prompts: list[list], media: Callable[[tuple], str], *, padding_side: str,
                  **images) -> dict:
    """``processor(text=..., <images>, padding=True, return_tensors="pt")`` as plain tensors."""
    text = [render(p, media) for p in prompts]
    kw = {k: v for k, v in images.items() if v}
    out = processor(text=text, padding=True, padding_side=padding_side, return_tensors="pt", **kw)
    return {k: v for k, v in out.items()}


def pad(seqs: list[list[int]], padding_side: str = "left", extra: list[list[int]] | None = None,
        pad_id: int = 0):
    """(input_ids, attention_mask[, extra row values]) of a padded batch; ``extra``: per-token
    values padded alike (e.g. token_type_ids)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r}; expected 'left' or 'right'")
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), L, dtype=torch.long)
    ext = torch.zeros(len(seqs), L, dtype=torch.long)
    for b, s in enumerate(seqs):
        sl = slice(L - len(s), L) if padding_side == "left" else slice(0, len(s))
        ids[b, sl] = torch.tensor(s)
        mask[b, sl] = 1
        if extra is not None:
            ext[b, sl] = torch.tensor(extra[b])
    return (ids, mask, ext) if extra is not None else (ids, mask)


def expand_prompts(prompts: list[list], expand, text_id: Callable[[int], int], padding_side: str = "left",
                   extra=None, pad_id: int = 0):
    """`pad` of a batch of prompts whose media items are expanded into token ids by hand (families
    whose processor needs torchvision). ``expand(item) -> list[int]`` is called once per item, in
    prompt order, row by row; ``extra(item, ids) -> list[int]``: per-token values of an item's ids
    (text tokens take 0)."""
    seqs, values = [], []
    for prompt in prompts:
        seq, val = [], []
        for it in prompt:
            if isinstance(it, int):
                seq.append(text_id(it))
                val.append(0)
                continue
            ids = expand(it)
            seq += ids
            if extra is not None:
                val += extra(it, ids)
        seqs.append(seq)
        values.append(val)
    return pad(seqs, padding_side, values if extra is not None else None, pad_id)


def instantiate(cls, cfg, *, seed: int, attn_implementation: str):
    """``cls(cfg)`` with a fixed seed and attention implementation, in eval mode."""
    cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    return cls(cfg).eval()


def image_only(processor_cls):
    """``processor_cls`` without its video processor (which needs torchvision): a subclass whose
    sub-processors are the image processor and the tokenizer; text and images go through the
    family's own ``__call__`` unchanged."""

    class ImageOnly(processor_cls):
        def __init__(self, image_processor=None, tokenizer=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, **kwargs)

    ImageOnly.__name__ = ImageOnly.__qualname__ = f"{processor_cls.__name__}ImageOnly"
    return ImageOnly
