"""Language-model prefill at real sizes with random weights, each time beside its bounds.

The decoder is transformers' `Qwen2_5_VLTextModel` built from the shape of Qwen2.5-VL-7B-Instruct's
released config.json (`QWEN2_5_VL_7B`; the vision tower is not built: the prompt's visual tokens
are random embeddings of the LM's width), plus its untied LM head applied to the last position, as
a generation prefill does. Prompts: a 576-token image (a 24 x 24 grid of merged patches) or a
1,280-token video (5 x 16 x 16) between `TEXT_BEFORE` and `TEXT_AFTER` text tokens, with M-RoPE
positions (text: 1-D; visual tokens: their (t, h, w) offsets). Pruning keeps a share of the visual
tokens chosen by ``evtp.select_tokens`` at their original positions (``position_mode="original"``).

Bounds of one prefill (batch B, length L; `prefill_flops`, `weight_bytes`):

* compute: FLOPs / peak bf16 FLOP/s. FLOPs = B * [layers * (2 L (2 h^2 + 2 h kv + 3 h I)
  + 2 h L (L + 1)) + 2 h V]: the projections and the MLP, causal attention (QK^T and AV over
  the i + 1 keys of query i), the LM head on the last position; norms, RoPE and softmax are
  element-wise and left out.
* weight bandwidth: bytes of every weight the prefill reads once (all but the token embedding,
  which ``inputs_embeds`` bypasses) / memory bandwidth.

The bound is the larger of the two, with the card's datasheet peaks (`evtp.bench.cards`) and with
the ceilings measured on it.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch

import evtp
from evtp.bench.cards import time_ms

TEXT_BEFORE = 14  # system prompt and "<|vision_start|>" in Qwen2.5-VL's chat template
TEXT_AFTER = 50   # "<|vision_end|>", a one-sentence referring instruction, the assistant header
PROMPTS = {"image": (1, 24, 24), "video": (5, 16, 16)}  # (t, h, w) visual grids: 576 and 1,280 tokens
KEEPS = (1.0, 0.5, 0.2, 0.1)
BATCHES = (1, 8)


@dataclass(frozen=True)
class DecoderShape:
    """The sizes of a Qwen2-style decoder that decide its cost."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    mrope_section: tuple[int, int, int]
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)


# Qwen/Qwen2.5-VL-7B-Instruct config.json: hidden_size 3584, num_hidden_layers 28,
# num_attention_heads 28, num_key_value_heads 4, intermediate_size 18944, vocab_size 152064,
# rope_scaling.mrope_section [16, 24, 24], rope_theta 1e6, rms_norm_eps 1e-6, untied embeddings.
QWEN2_5_VL_7B = DecoderShape(3584, 28, 28, 4, 18944, 152064, (16, 24, 24))
# the same code path at a size a CPU runs in seconds (head dim 16: M-RoPE sections sum to 8)
TINY = DecoderShape(64, 2, 4, 2, 128, 1000, (2, 3, 3))


def prefill_flops(shape: DecoderShape, batch: int, length: int, *, causal: bool = True) -> int:
    """Matrix-product FLOPs of one prefill (module docstring); ``causal=False`` counts the full
    L x L attention products instead (what a FLOP counter that ignores the mask reports)."""
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    linear = 2 * length * (2 * h * h + 2 * h * kv + 3 * h * i)
    attention = 2 * h * length * (length + 1) if causal else 4 * h * length * length
    return batch * (shape.layers * (linear + attention) + 2 * h * shape.vocab)


def weight_bytes(model: torch.nn.Module, lm_head: torch.nn.Module) -> int:
    """Bytes of the weights one prefill reads: every parameter but the token embedding."""
    skip = {id(p) for p in model.get_input_embeddings().parameters()}
    params = [p for p in model.parameters() if id(p) not in skip] + list(lm_head.parameters())
    return sum(p.numel() * p.element_size() for p in params)


def build_decoder(shape: DecoderShape, device: torch.device, dtype: torch.dtype = torch.bfloat16,
                  attn_implementation: str = "sdpa", seed: int = 0):
    """Random-weight `Qwen2_5_VLTextModel` of ``shape`` and its LM head, built on ``device`` in
    ``dtype`` (eval mode). Returns (model, lm_head)."""
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    config = Qwen2_5_VLTextConfig(
        hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, intermediate_size=shape.intermediate, vocab_size=shape.vocab,
        rms_norm_eps=shape.rms_norm_eps, max_position_embeddings=32768, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,  # no token ids: the prompt is embeddings
        rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta,
                         "mrope_section": list(shape.mrope_section)})
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2_5_VLTextModel(config).eval()
            lm_head = torch.nn.Linear(shape.hidden, shape.vocab, bias=False).eval()
    finally:
        torch.set_default_dtype(default)
    return model, lm_head


def grid_positions(grid: tuple[int, int, int]) -> torch.Tensor:
    """(t * h * w, 3) long (frame, row, col) of a visual grid in raster order."""
    t, h, w = grid
    ft, fh, fw = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([ft.flatten(), fh.flatten(), fw.flatten()], -1)


def prompt_inputs(visual: torch.Tensor, text: torch.Tensor, grid: tuple[int, int, int],
                  kept: torch.Tensor | None):
    """Inputs of one prefill: text before, the kept visual tokens, text after.

    Args:
        visual: (B, V, h) visual embeddings; text: (B, TEXT_BEFORE + TEXT_AFTER, h) text
            embeddings; grid: the (t, h, w) grid of the V visual tokens;
        kept: (B, K) long sorted indices of the kept visual tokens, or None for all.
    Returns:
        inputs_embeds (B, L, h) and M-RoPE position_ids (3, B, L), L = TEXT_BEFORE + K + TEXT_AFTER;
        kept tokens hold their original positions, the text after starts one past the full grid.
    """
    B, V, _ = visual.shape
    cell = grid_positions(grid).to(visual.device)  # (V, 3)
    if kept is None:
        kept = torch.arange(V, device=visual.device).expand(B, V)
    vis = visual.gather(1, kept.unsqueeze(-1).expand(-1, -1, visual.shape[-1]))
    embeds = torch.cat([text[:, :TEXT_BEFORE], vis, text[:, TEXT_BEFORE:]], 1)
    before = torch.arange(TEXT_BEFORE, device=visual.device).expand(3, B, TEXT_BEFORE)
    vis_pos = (TEXT_BEFORE + cell[kept]).permute(2, 0, 1)  # (3, B, K)
    start = TEXT_BEFORE + int(cell.max()) + 1
    after = torch.arange(start, start + TEXT_AFTER, device=visual.device).expand(3, B, TEXT_AFTER)
    return embeds, torch.cat([before, vis_pos, after], 2)


@torch.no_grad()
def prefill(model, lm_head, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """One generation prefill: the decoder over the prompt (filling a KV cache) and the LM head on
    the last position. Returns (B, vocab) logits."""
    out = model(inputs_embeds=embeds, position_ids=positions, use_cache=True)
    return lm_head(out.last_hidden_state[:, -1])


@dataclass(frozen=True)
class PrefillPlan:
    """What `run_prefill` measures: ``shape`` on ``device`` in bf16, every prompt x batch x keep,
    ``warmup`` untimed and ``repeats`` timed calls (medians), the keeps of one (prompt, batch)
    interleaved."""

    shape: DecoderShape = QWEN2_5_VL_7B
    prompts: tuple[str, ...] = tuple(PROMPTS)
    batches: tuple[int, ...] = BATCHES
    keeps: tuple[float, ...] = KEEPS
    warmup: int = 2
    repeats: int = 10
    method: str = "evtp"


def run_prefill(plan: PrefillPlan, device: torch.device, ceilings: dict, peak: dict | None) -> dict:
    """Build the decoder, time every prefill and put each beside its bounds. Returns
    {"shape", "weight_bytes", "rows": [...]} (rows as `_bounds` adds them)."""
    model, lm_head = build_decoder(plan.shape, device)
    wbytes = weight_bytes(model, lm_head)
    rows = []
    for prompt in plan.prompts:
        for batch in plan.batches:
            rows += _time_prompt(plan, model, lm_head, prompt, batch, device)
    for row in rows:
        row.update(_bounds(plan.shape, row, wbytes, ceilings, peak))
    del model, lm_head
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"shape": asdict(plan.shape), "weight_bytes": wbytes, "method": plan.method, "rows": rows}


def _time_prompt(plan: PrefillPlan, model, lm_head, prompt: str, batch: int, device: torch.device) -> list[dict]:
    grid = PROMPTS[prompt]
    g = torch.Generator(device="cpu").manual_seed(batch)
    n_vis = grid[0] * grid[1] * grid[2]
    h = plan.shape.hidden
    visual = (torch.randn(batch, n_vis, h, generator=g) * 0.02).to(device, torch.bfloat16)
    text = (torch.randn(batch, TEXT_BEFORE + TEXT_AFTER, h, generator=g) * 0.02).to(device, torch.bfloat16)
    pos = grid_positions(grid).to(device).expand(batch, n_vis, 3)
    calls, select = {}, {}
    for keep in plan.keeps:
        kept = None if keep == 1.0 else evtp.select_tokens(visual, pos, keep, plan.method)
        embeds, positions = prompt_inputs(visual, text, grid, kept)
        calls[keep] = (lambda e=embeds, p=positions: prefill(model, lm_head, e, p))
        if keep != 1.0:
            select[keep] = (lambda k=keep: evtp.select_tokens(visual, pos, k, plan.method))
    times = {k: [] for k in calls}
    sel_times = {k: [] for k in select}
    for fn in [*calls.values(), *select.values()]:
        time_ms(fn, device, warmup=plan.warmup, repeats=0)
    for _ in range(plan.repeats):  # interleaved: every keep sees the same state of the card
        for k, fn in calls.items():
            times[k] += time_ms(fn, device, warmup=0, repeats=1)
        for k, fn in select.items():
            sel_times[k] += time_ms(fn, device, warmup=0, repeats=1)
    rows = []
    for keep, ts in times.items():
        kept = n_vis if keep == 1.0 else max(1, int(n_vis * keep + 0.5))
        rows.append({"prompt": prompt, "visual_tokens": n_vis, "batch": batch, "keep": keep, "kept": kept,
                     "length": TEXT_BEFORE + kept + TEXT_AFTER, "prefill_ms": statistics.median(ts),
                     "prefill_ms_runs": ts,
                     "selection_ms": statistics.median(sel_times[keep]) if keep in sel_times else 0.0})
    full = next(r["prefill_ms"] for r in rows if r["keep"] == 1.0) if 1.0 in times else None
    for r in rows:
        r["speedup"] = full / r["prefill_ms"] if full else None
    return rows


def _bounds(shape: DecoderShape, row: dict, wbytes: int, ceilings: dict, peak: dict | None) -> dict:
    flops = prefill_flops(shape, row["batch"], row["length"])
    out = {"flops": flops, "bound_measured_ms": max(flops / (ceilings["bf16_tflops"] * 1e12),
                                                     wbytes / (ceilings["copy_tb_s"] * 1e12)) * 1e3}
    out["compute_bound_measured_ms"] = flops / (ceilings["bf16_tflops"] * 1e12) * 1e3
    out["bandwidth_bound_measured_ms"] = wbytes / (ceilings["copy_tb_s"] * 1e12) * 1e3
    if peak:
        out["compute_bound_ms"] = flops / (peak["bf16_tflops"] * 1e12) * 1e3
        out["bandwidth_bound_ms"] = wbytes / (peak["hbm_tb_s"] * 1e12) * 1e3
        out["bound_ms"] = max(out["compute_bound_ms"], out["bandwidth_bound_ms"])
    return out
