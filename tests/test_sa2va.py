"""Sa2VA under pruning, on small stand-ins written from its public structure.

* ``Sa2VAChatModel`` (the InternVL variants' remote code): InternViT -> pixel shuffle -> ``mlp1``,
  placeholders overwritten in ``generate``, ``language_model.generate(inputs_embeds=...,
  output_hidden_states=True, return_dict_in_generate=True)``, ``[SEG]`` states counted back from
  the end of the generated hidden states -> ``text_hidden_fcs`` -> SAM2 prompt. The stand-in uses
  transformers' InternVL vision tower and a Qwen2 LM; it is not the released code.
* The Qwen variants wrap the HF model (tests/test_token_pruner.py covers that path).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import evtp
from evtp.testing.families.internvl import END as IMG_END
from evtp.testing.families.internvl import IMAGE
from evtp.testing.families.internvl import START as IMG_START
from evtp.testing.tiny import TEXT

torch.set_num_threads(1)
SEG = 104


class Sa2VAChatModel(nn.Module):
    """Stand-in of Sa2VA's remote-code class (same attribute names and call order)."""

    def __init__(self, seed: int = 0, sam_dim: int = 128):
        super().__init__()
        import transformers as tf

        torch.manual_seed(seed)
        vcfg = tf.InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=4, image_size=[32, 32], patch_size=[8, 8])
        self.vision_model = tf.InternVLVisionModel(vcfg)
        self.downsample_ratio = 0.5
        self.num_image_token = 4  # (32 / 8 * 0.5)^2
        c = 32 * 4
        self.mlp1 = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, 32), nn.GELU(), nn.Linear(32, 32))
        text = tf.Qwen2Config(**TEXT)
        text._attn_implementation = "sdpa"
        self.language_model = tf.Qwen2ForCausalLM(text)
        self.img_context_token_id = IMAGE
        self.seg_token_idx = SEG
        self.text_hidden_fcs = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, sam_dim))

    def pixel_shuffle(self, x):
        n, h, w, c = x.shape
        x = x.view(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(n, (h // 2) * (w // 2), 4 * c)

    def extract_feature(self, pixel_values):
        vit = self.vision_model(pixel_values=pixel_values).last_hidden_state[:, 1:]  # drop CLS
        side = int(vit.shape[1] ** 0.5)
        return self.mlp1(self.pixel_shuffle(vit.reshape(vit.shape[0], side, side, -1)))

    @torch.no_grad()
    def generate(self, pixel_values, input_ids, attention_mask=None, **generate_kwargs):
        vit_embeds = self.extract_feature(pixel_values)
        input_embeds = self.language_model.get_input_embeddings()(input_ids)
        B, N, C = input_embeds.shape
        input_embeds = input_embeds.reshape(B * N, C)
        selected = input_ids.reshape(B * N) == self.img_context_token_id
        input_embeds[selected] = vit_embeds.reshape(-1, C).to(input_embeds.dtype)
        input_embeds = input_embeds.reshape(B, N, C)
        return self.language_model.generate(inputs_embeds=input_embeds, attention_mask=attention_mask,
                                            output_hidden_states=True, return_dict_in_generate=True,
                                            **generate_kwargs)

    def predict_forward(self, pixel_values, input_ids, **generate_kwargs):
        out = self.generate(pixel_values, input_ids, **generate_kwargs)
        generated = out.sequences[0]  # inputs_embeds-only generate returns the new tokens only
        hidden = torch.cat([h[-1][0] for h in out.hidden_states], 0)  # (prompt + new - 1, C)
        last = hidden[-generated.shape[0]:]  # counted back from the end, as Sa2VA does
        seg = last[generated == self.seg_token_idx]
        return out, self.text_hidden_fcs(seg)


def prompt(frames: int, tiles: int = 1):
    ids = [5, 6]
    for f in range(frames):
        ids += [7 + f, IMG_START] + [IMAGE] * (4 * tiles) + [IMG_END]
    return torch.tensor([ids + [8, 9]])


@pytest.fixture(scope="module")
def sa2va():
    return Sa2VAChatModel().eval()


def run(model, frames, **kw):
    ids = prompt(frames)
    pixels = torch.randn(frames, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return model.predict_forward(pixels, ids, attention_mask=torch.ones_like(ids), max_new_tokens=3,
                                 do_sample=False, pad_token_id=0, sequence_bias={(SEG,): 50.0}, **kw)


def test_the_adapter_finds_the_remote_code_class(sa2va):
    from evtp.integrations.registry import find_family

    core, fam = find_family(sa2va)
    assert core is sa2va and fam.name.startswith("Sa2VA-InternVL")


@torch.no_grad()
def test_keep_one_equals_unpatched(sa2va):
    ref_out, ref_seg = run(sa2va, 2)
    with evtp.TokenPruner(keep=1.0)(sa2va):
        out, seg = run(sa2va, 2)
        lp = evtp.TokenPruner.last_pruning(sa2va)
    assert lp.visual_total.tolist() == [8] and torch.equal(lp.visual_kept, lp.visual_total)
    assert torch.equal(out.sequences, ref_out.sequences)
    torch.testing.assert_close(seg, ref_seg, atol=1e-5, rtol=0)


@torch.no_grad()
def test_video_frames_pruned_seg_states_and_sam2_masks(sa2va):
    """Five frames, each its own <img> run (one budget per frame); [SEG] states come out of the
    generated part and prompt SAM2 on every frame."""
    from evtp.models.segmentation import sam2_video_decode
    from evtp.testing.ivs import tiny_sam2_video

    frames = 5
    with evtp.TokenPruner("evtp", keep=0.25)(sa2va):
        out, seg = run(sa2va, frames)
        lp = evtp.TokenPruner.last_pruning(sa2va)
    L = prompt(frames).shape[1]
    assert lp.visual_total.tolist() == [20] and lp.visual_kept.tolist() == [5]  # 1 of 4 per frame
    kept = lp.kept_indices[0]
    ids = prompt(frames)[0]
    per_run = [(ids[kept] == IMAGE)[(kept >= 2 + 7 * f) & (kept < 2 + 7 * (f + 1))].sum() for f in range(frames)]
    assert [int(x) for x in per_run] == [1] * frames
    assert out.hidden_states[0][-1].shape[1] == L - 15  # the decoder's first step saw the pruned prompt
    assert seg.shape == (3, 128) and bool(torch.isfinite(seg).all())  # the bias makes every new token [SEG]
    sam2 = tiny_sam2_video()
    video = torch.randn(frames, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    masks = sam2_video_decode(sam2, video, seg[0], cond_frames=range(frames), out_hw=(64, 64))
    assert masks.shape == (frames, 64, 64) and bool(torch.isfinite(masks).all())


@torch.no_grad()
def test_generate_with_cache_equals_a_forward_on_the_pruned_prompt(sa2va):
    with evtp.TokenPruner("evtp", keep=0.5)(sa2va):
        out, _ = run(sa2va, 2, output_logits=True)
        lp = evtp.TokenPruner.last_pruning(sa2va)
    new = out.sequences  # (1, 3)
    lm = sa2va.language_model
    emb = torch.cat([lp.inputs_embeds, lm.get_input_embeddings()(new[:, :-1])], 1)
    pos = torch.cat([lp.position_ids, lp.next_position.unsqueeze(1) + torch.arange(2)], 1)
    logits = lm(inputs_embeds=emb, attention_mask=torch.ones(1, emb.shape[1], dtype=torch.long),
                position_ids=pos).logits[:, lp.inputs_embeds.shape[1] - 1:]
    torch.testing.assert_close(torch.stack(out.logits, 1), logits, atol=1e-4, rtol=1e-4)
