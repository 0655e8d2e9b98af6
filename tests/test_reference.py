"""The reference model on tiny random configs: shapes, the pruning hook, positions, the runner."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from evtp.data.synthetic import make_sample
from evtp.models.reference import ReferenceConfig, ReferenceIVS, frames_to_tensor
from evtp.selection import METHODS
from evtp.testing.reference import TINY_REFERENCE, tiny_reference


def parts(inputs):
    """`LMInputs` as (embeds, position ids, attention mask, visual start, last) for short asserts."""
    return inputs.embeds, inputs.position_ids, inputs.attention_mask, inputs.visual_start, inputs.last


def tiny(**kw) -> ReferenceIVS:
    """A tiny random model whose default readout is "dense" (the heat-map prompt these tests
    inspect); the "point" readout is tested in test_reference_readouts.py."""
    return tiny_reference(**{"readouts": ("dense", "point"), **kw})


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def image():
    return make_sample("test", 0, "image")


@pytest.fixture(scope="module")
def video():
    return make_sample("test", 0, "video")


def test_forward_train_shapes(model, image, video):
    for s, T in ((image, 1), (video, 8)):
        fr = torch.cat([frames_to_tensor(s.frames, 256)] * 2)
        prev = torch.zeros(2, T, 64, 64) if T > 1 else None
        out = model.forward_train(fr, [model.tok.encode(s.instruction)] * 2, prev)
        assert out.masks.shape == (2, T, 64, 64)
        assert out.heat.shape == (2, 256)
        assert out.seg_logits.shape == (2, len(model.cfg.token_vocab))
        assert out.align_logits.shape[0] == len(model.cfg.align_layers) and out.role_logits is not None


def test_predict_shapes_and_counts(model, image, video):
    p = model.predict(image, method="random", keep=0.2)
    assert p.masks.shape == image.gt_masks.shape and p.masks.dtype == bool
    assert p.tokens_total == 256 and p.tokens_kept == round(0.2 * 256)
    assert set(p.timings_ms) >= {"vision", "selection", "lm_prefill", "decode", "mask_decoder", "total"}
    pv = model.predict(video, method="random", keep=0.2)
    assert pv.masks.shape == video.gt_masks.shape
    assert pv.tokens_total == 256 * len(model.cfg.lm_frames)
    assert model.predict(image, keep=0).tokens_kept == 0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_hook_with_every_method(model, image, video, method):
    for s in (image, video):
        p = model.predict(s, method=method, keep=0.1, generator=torch.Generator().manual_seed(0))
        k = p.extra["kept"]
        assert 1 <= p.tokens_kept <= round(0.1 * p.tokens_total) and len(np.unique(k)) == len(k)
        assert p.masks.shape == s.gt_masks.shape


@pytest.mark.parametrize("task", ["image", "video"])
def test_full_keep_through_selection_equals_unpruned(model, image, video, task):
    s = image if task == "image" else video
    full = model.predict(s, keep=1.0)
    n = full.tokens_total
    # keep = N as a ratio just below 1 goes through select_tokens and keeps everything
    via = model.predict(s, method="random", keep=(n - 0.4) / n, generator=torch.Generator().manual_seed(1))
    assert via.tokens_kept == n
    assert np.array_equal(full.masks, via.masks)
    fr = frames_to_tensor(s.frames, 256)
    t = [model.tok.encode(s.instruction)]
    a = model.run(fr, t, keep=1.0)["heat"]
    b = model.run(fr, t, method="random", keep=(n - 0.4) / n)["heat"]
    assert torch.allclose(a, b, atol=1e-5)


def test_image_layout_padding_and_no_visual_tokens(model):
    """Layout [PAD]* [BOS] words <visual> [SEG] on one image: left padding, kept tokens at
    s + 1 + (0, row, column), padded kept entries (-1) masked out and not advancing contiguous
    positions, the kept tokens' embeddings, and keep 0 ([SEG] right after the instruction)."""
    B, N = 2, 256
    visual = torch.randn(B, N, model.cfg.lm_dim)
    kept = torch.tensor([[3, 10, 200], [0, 1, 255]])
    text = [[5, 6], [7]]
    e, pos, attn, vs, last = parts(model.build_inputs(visual, kept, text))
    assert pos.shape == (3, B, 7) and vs == 3 and last.tolist() == [6, 6]
    assert attn[1].tolist() == [0, 1, 1, 1, 1, 1, 1] and attn[0].tolist() == [1] * 7
    assert pos[:, 0, 3:6].T.tolist() == [[3, 3, 6], [3, 3, 13], [3, 15, 11]]  # token 200: row 12, column 8
    assert pos[:, 1, 3:6].T.tolist() == [[2, 2, 2], [2, 2, 3], [2, 17, 17]]
    assert pos[:, 0, 6].tolist() == [3 + 16] * 3 and pos[:, 1, 6].tolist() == [2 + 16] * 3  # after the grid
    e, pos, attn, vs, last = parts(model.build_inputs(visual[:1], torch.tensor([[3, -1]]), [[5]], position_mode="contiguous"))
    assert attn[0].tolist() == [1, 1, 1, 0, 1] and pos[:, 0, 2].tolist() == [2] * 3 and pos[:, 0, 4].tolist() == [3] * 3
    # the gathered embeddings are the kept tokens' (+ their frame embedding)
    e, _, _, vs, _ = parts(model.build_inputs(visual, kept, text))
    assert torch.allclose(e[0, vs], visual[0, 3] + model.frame_embed[0])
    e, pos, attn, vs, last = parts(model.build_inputs(visual, torch.empty((B, 0), dtype=torch.long), text))
    assert e.shape[1] == 4 and pos[:, 0, -1].tolist() == [2 + 1 + 16] * 3


def test_mrope_positions_are_frame_row_column():
    """M-RoPE: text at (i, i, i); a kept visual token at s + 1 + (frame, row, column) whatever else
    is kept; [SEG] after the largest of them; contiguous re-indexing gives (s+i, s+i, s+i)."""
    model = tiny()
    assert type(model.lm).__name__ == "Qwen2VLTextModel"
    B, N = 2, 3 * 256  # three LM frames
    visual = torch.randn(B, N, model.cfg.lm_dim)
    kept = torch.tensor([[3, 17, 300], [0, 255, 767]])
    text = [[5, 6], [7]]
    e, pos, attn, vs, last = parts(model.build_inputs(visual, kept, text))
    assert pos.shape == (3, B, 7) and vs == 3
    assert pos[:, 0, :3].tolist() == [[0, 1, 2]] * 3 and pos[:, 1, 1:3].tolist() == [[0, 1]] * 3
    s0, s1 = 2 + 1, 1 + 1  # first visual position of each row
    assert pos[:, 0, 3].tolist() == [s0 + 0, s0 + 0, s0 + 3]  # token 3: frame 0, row 0, column 3
    assert pos[:, 0, 4].tolist() == [s0 + 0, s0 + 1, s0 + 1]  # token 17: row 1, column 1
    assert pos[:, 0, 5].tolist() == [s0 + 1, s0 + 2, s0 + 12]  # token 300 = 256 + 2 * 16 + 12
    assert pos[:, 1, 5].tolist() == [s1 + 2, s1 + 15, s1 + 15]
    assert pos[:, 0, 6].tolist() == [s0 + 16] * 3 and pos[:, 1, 6].tolist() == [s1 + 16] * 3  # [SEG]
    # the same token has the same position whatever else is kept
    e, pos2, _, _, _ = parts(model.build_inputs(visual, torch.tensor([[300], [767]]), text))
    assert pos2[:, 0, 3].tolist() == pos[:, 0, 5].tolist()
    e, pos, attn, vs, last = parts(model.build_inputs(visual, kept, text, position_mode="contiguous"))
    assert pos[:, 0, 3:].tolist() == [[3, 4, 5, 6]] * 3
    with pytest.raises(ValueError, match="lm_mrope_section"):
        tiny(lm_mrope_section=(4, 10, 10))  # head_dim 16 has 8 pairs


def test_kv_cache_decode_matches_one_pass(model, video):
    """run() prefills then decodes [SEG] with the KV cache; the same [SEG] state comes out of one
    full pass over the sequence."""
    fr = frames_to_tensor(video.frames, 256)
    t = [model.tok.encode(video.instruction)]
    kept_heat = model.run(fr, t, method="uniform", keep=0.3)
    vit, _ = model.encode_frames(fr)
    visual = model.visual_tokens(vit)
    positions = model.token_positions(len(model.lm_frame_ids(fr.shape[1])))
    kept = model.select_visual_tokens(visual, positions, method="uniform", keep=0.3)
    inputs = model.build_inputs(visual, kept, t)
    vs = inputs.visual_start
    with torch.no_grad():
        h = model.lm_forward(inputs, prefix_len=inputs.embeds.shape[1] - 1).last_hidden_state
        prompt = model.prompt(h[:, -1], h[:, vs:vs + kept.shape[1]], visual, kept, positions)
    assert torch.allclose(prompt.heat, kept_heat["heat"], atol=1e-4)


def test_original_positions_change_lm_output(model, image):
    a = model.predict(image, method="uniform", keep=0.2)
    b = model.predict(image, method="uniform", keep=0.2, position_mode="contiguous")
    assert np.array_equal(a.extra["kept"], b.extra["kept"])
    fr = frames_to_tensor(image.frames, 256)
    t = [model.tok.encode(image.instruction)]
    ha = model.run(fr, t, method="uniform", keep=0.2)["heat"]
    hb = model.run(fr, t, method="uniform", keep=0.2, position_mode="contiguous")["heat"]
    assert not torch.allclose(ha, hb)


def test_batched_run_matches_single(model, image):
    s2 = make_sample("test", 1, "image")
    fr = torch.cat([frames_to_tensor(image.frames, 256), frames_to_tensor(s2.frames, 256)])
    t = [model.tok.encode(image.instruction), model.tok.encode(s2.instruction)]
    both = model.run(fr, t, method="kcenter", keep=0.3)
    one = model.run(fr[1:], t[1:], method="kcenter", keep=0.3)
    assert torch.allclose(both["heat"][1], one["heat"][0], atol=1e-4)


def test_bad_inputs(model, image):
    with pytest.raises(ValueError, match="unknown selection method"):
        model.predict(image, method="nope", keep=0.2)
    with pytest.raises(ValueError, match="frames"):
        frames_to_tensor(np.zeros((8, 8, 3), np.uint8), 256)


def test_save_load_roundtrip(tmp_path, model, image):
    from evtp.models.reference import load_pretrained, save_model

    save_model(model, tmp_path, {"note": "tiny"}, dtype=torch.float32)
    m2 = load_pretrained(tmp_path)
    assert m2.meta == {"note": "tiny"}
    assert np.array_equal(model.predict(image, keep=1.0).masks, m2.predict(image, keep=1.0).masks)
    with pytest.raises(FileNotFoundError, match="reference.json"):
        load_pretrained(tmp_path / "missing")


def test_bench_cli_json_contract(tmp_path):
    from evtp.cli.bench_reference import main

    out = tmp_path / "r.json"
    argv = ["--task", "image", "--split", "test", "--seed-offset", "5", "--samples", "2",
            "--methods", "random,evtp", "--keep", "1.0,0.2,0", "--out", str(out), "--weights",
            "random-tiny", "--repeats", "1", "--overlays", "1", "--threads", "1"]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"random", "evtp"}
    for m in res:
        assert set(res[m]) == {"1.0", "0.2", "0"}
        for k, r in res[m].items():
            assert {"ciou", "giou", "lm_prefill_ms", "total_ms", "tokens_kept", "target_hit"} <= set(r)
            assert 0 <= r["ciou"] <= 1 and 0 <= r["target_hit"] <= 1
    assert res["evtp"]["0"]["tokens_kept"] == 0 and res["evtp"]["1.0"]["tokens_kept"] == 256
    assert res["evtp"]["0.2"]["tokens_kept"] == round(0.2 * 256)
    for m in res:  # keep 0 hits nothing; all tokens hit every object
        assert res[m]["0"]["set_hit"] == res[m]["0"]["object_hit"] == 0.0
        assert res[m]["1.0"]["set_hit"] == res[m]["1.0"]["object_hit"] == 1.0
        assert "on_objects" not in res[m]["0"] and 0 < res[m]["1.0"]["on_objects"] < 0.5
        # the point readout: the LM writes a location at every keep, keep 0 included
        assert all(0 <= res[m][k]["pointer_hit"] <= 1 and res[m][k]["readout"] == "point" for k in res[m])
        assert res[m]["0.2"]["target_hit"] <= 1 and 0 <= res[m]["0.2"]["set_hit"] <= 1
    assert (tmp_path / "r.md").exists() and (tmp_path / "r_accuracy.png").exists()
    assert "set hit" in (tmp_path / "r.md").read_text()
    # every method after the first carries its paired difference to the first at keeps in (0, 1)
    paired = res["evtp"]["0.2"]["paired"]
    assert paired["vs"] == "random" and paired["n"] == 2 and paired["se"] >= 0
    assert paired["lo"] <= paired["hi"]
    assert paired["diff"] == pytest.approx(res["evtp"]["0.2"]["ciou"] - res["random"]["0.2"]["ciou"])
    assert all("paired" not in res["evtp"][k] for k in ("1.0", "0")) and "paired" not in res["random"]["0.2"]
    assert "Difference to `random`" in (tmp_path / "r.md").read_text()
    lines = (tmp_path / "r.records.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 2 * 3 * 2
    # resume: a second run does no new work and gives the same JSON
    assert main(argv) == 0
    assert len((tmp_path / "r.records.jsonl").read_text().splitlines()) == len(lines)
    assert json.loads(out.read_text())["evtp"]["0.2"]["ciou"] == res["evtp"]["0.2"]["ciou"]
    # the dense readout on the same weights is another run: its records do not resume these
    dense = tmp_path / "d.json"
    argv_dense = argv[:argv.index("--out")] + ["--out", str(dense)] + argv[argv.index("--out") + 2:]
    assert main(argv_dense + ["--readout", "dense"]) == 0
    res_dense = json.loads(dense.read_text())
    assert res_dense["evtp"]["0.2"]["readout"] == "dense" and "pointer_hit" not in res_dense["evtp"]["0"]


def test_bench_records_of_other_weights_never_resume(tmp_path, capsys):
    """Same --weights directory, new weights inside it: the old records are refused, not reused."""
    from evtp.cli.bench_reference import main
    from evtp.models.reference import save_model

    wdir, out = tmp_path / "w", tmp_path / "r.json"
    argv = ["--samples", "1", "--methods", "evtp", "--keep", "0.2", "--out", str(out), "--weights",
            str(wdir), "--repeats", "1", "--overlays", "0", "--no-plots", "--threads", "1"]
    save_model(tiny(), wdir, {})
    assert main(argv) == 0
    other = tiny()
    with torch.no_grad():
        other.token_aux.bias += 1.0
    save_model(other, wdir, {})
    with pytest.raises(SystemExit):
        main(argv)
    assert "different settings" in capsys.readouterr().err


def test_bench_resumes_past_a_torn_last_record(tmp_path):
    """A run killed mid-line leaves a torn last record: the re-run drops it, redoes that run only,
    and the file holds whole lines again."""
    from evtp.cli.bench_reference import main

    out = tmp_path / "r.json"
    argv = ["--samples", "2", "--methods", "evtp", "--keep", "0.2", "--out", str(out), "--weights",
            "random-tiny", "--repeats", "1", "--timed-samples", "0", "--overlays", "0", "--no-plots",
            "--threads", "1"]
    assert main(argv) == 0
    rec_path = tmp_path / "r.records.jsonl"
    lines = rec_path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["header"]["readout"] == "point"
    rec_path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])  # the second sample's record torn
    assert main(argv) == 0
    again = rec_path.read_text().splitlines()
    assert again[:2] == lines[:2] and json.loads(again[2]) == json.loads(lines[2]) and len(again) == 3


def test_bench_cli_video_keys(tmp_path):
    from evtp.cli.bench_reference import main

    out = tmp_path / "v.json"
    assert main(["--task", "video", "--samples", "1", "--methods", "evtp", "--keep", "0.2",
                 "--out", str(out), "--weights", "random-tiny", "--repeats", "1", "--overlays", "0",
                 "--no-plots", "--threads", "1"]) == 0
    r = json.loads(out.read_text())["evtp"]["0.2"]
    assert {"j", "f", "jf", "lm_prefill_ms", "total_ms", "tokens_kept", "target_hit"} <= set(r)
    cfg = ReferenceConfig()
    assert r["tokens_kept"] == round(0.2 * len(cfg.lm_frames) * cfg.grid ** 2)


def test_bench_cli_rejects_bad_keep(tmp_path, capsys):
    from evtp.cli.bench_reference import main

    with pytest.raises(SystemExit):
        main(["--keep", "1.5", "--out", str(tmp_path / "x.json"), "--weights", "random-tiny"])
    assert "keep" in capsys.readouterr().err


def test_prefix_mask_semantics(model):
    """Prefix tokens see every real prefix token (both directions) but not [SEG]; [SEG] sees all
    real tokens; padding is never attended to and padding rows are not empty."""
    attn = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    m = model.lm_mask(attn, prefix_len=4)[:, 0]
    assert m.shape == (2, 5, 5) and m.dtype == torch.bool
    assert m[1, :4, :4].all() and not m[1, :4, 4].any() and m[1, 4].all()
    assert not m[0, 1:, 0].any() and m[0, 0, 0]
    assert m.any(-1).all()


def test_training_forward_matches_inference(model, image, video):
    """The teacher-forced training pass and `run` at full tokens give the same prompt (heat map):
    the prefix mask hides [SEG] from the prefix exactly as the prefill-then-decode inference does."""
    for s in (image, video):
        fr = frames_to_tensor(s.frames, 256)
        text = [model.tok.encode(s.instruction)]
        prev = torch.zeros(1, fr.shape[1], 64, 64) if fr.shape[1] > 1 else None
        with torch.no_grad():
            a = model.forward_train(fr, text, prev).heat
            b = model.run(fr, text, keep=1.0)["heat"]
        assert torch.allclose(a, b, atol=1e-4)


def test_prefix_mask_lets_an_early_visual_token_see_later_ones(model, image):
    """In the LM itself (not only in `lm_mask`): changing the last visual token changes the state
    of the first one, which a causal mask would hide from it."""
    fr = frames_to_tensor(image.frames, 256)
    visual = model.visual_tokens(model.encode_frames(fr)[0])
    with torch.no_grad():
        inputs = model.build_inputs(visual, None, [model.tok.encode(image.instruction)], append_seg=False)
    vs = inputs.visual_start
    changed = dataclasses.replace(inputs, embeds=inputs.embeds.clone())
    changed.embeds[:, -1] += 1.0  # change the last visual token only
    with torch.no_grad():
        h = model.lm_forward(inputs).last_hidden_state
        h2 = model.lm_forward(changed).last_hidden_state
    assert float((h2[:, vs] - h[:, vs]).abs().max()) > 1e-5


def test_conv_stem_shapes(model):
    x = torch.rand(2, 1, 3, 256, 256)
    assert model.encode_frames(x)[0].shape == (2, 1, 256, 32)


def test_defaults_are_the_shipped_recipe():
    """`ReferenceConfig()` is the shipped weights' configuration (vocabulary aside), and the
    shipped file names no removed option."""
    from evtp.models.reference.config import REMOVED_OPTIONS
    from evtp.models.reference.saving import WEIGHTS_DIR

    shipped = json.loads((WEIGHTS_DIR / "reference.json").read_text())["config"]
    mine = ReferenceConfig().to_json()
    assert {k: v for k, v in mine.items() if k != "vocab"} == {k: v for k, v in shipped.items() if k != "vocab"}
    assert not set(REMOVED_OPTIONS) & set(shipped)
    assert ReferenceConfig.from_json(shipped) == ReferenceConfig(vocab=tuple(shipped["vocab"]))


def test_removed_options_load_only_with_the_value_that_remains():
    """Saved configs that still name a removed option load when it holds the value the model
    always has now; any other value is refused by name, with the value and "retrain"; unknown keys
    and values the config refuses stay refused."""
    saved = ReferenceConfig(**TINY_REFERENCE).to_json()
    kept = {"lm_rope": "mrope", "lm_attention": "prefix", "vit_stem": "conv", "appearance_prompt": False}
    assert ReferenceConfig.from_json({**saved, **kept}) == ReferenceConfig.from_json(saved)
    for key, value in (("lm_rope", "1d"), ("lm_attention", "causal"), ("vit_stem", "linear"),
                       ("appearance_prompt", True)):
        with pytest.raises(ValueError, match=f"{key}={value!r}.*removed.*retrain"):
            ReferenceConfig.from_json({**saved, **kept, key: value})
    with pytest.raises(TypeError, match="motion_layer"):
        ReferenceConfig.from_json({**saved, "motion_layer": 3})
    for bad, words in (({"role_layer": 3}, "role_layer must be in 0 .. lm_layers=2, got 3"),
                       ({"align_layers": [0, 3]}, r"align_layers must be distinct depths in 0 .. lm_layers=2, got \[0, 3\]"),
                       ({"align_layers": [1, 1]}, "align_layers"), ({"role_layer": -1}, "role_layer")):
        with pytest.raises(ValueError, match=words):
            ReferenceConfig.from_json({**saved, **bad})
    # the default alignment depths need the default depth: a 2-layer LM must name its own
    with pytest.raises(ValueError, match="align_layers"):
        ReferenceConfig(lm_layers=2, role_layer=1)


def test_without_visual_tokens_the_prompt_is_the_position_term_alone(image):
    """keep 0: no pointer -> the heat map is the position term [SEG] reads from the words."""
    model = tiny()
    fr = frames_to_tensor(image.frames, 256)
    text = [model.tok.encode(image.instruction)]
    with torch.no_grad():
        out = model.run(fr, text, keep=0)
        inputs = model.build_inputs(model.visual_tokens(model.encode_frames(fr)[0]),
                                    torch.empty((1, 0), dtype=torch.long), text)
        h_seg = model.lm_forward(inputs, prefix_len=inputs.embeds.shape[1] - 1).last_hidden_state[:, -1]
        position = model.decoder.prompt(h_seg)
    assert torch.allclose(out["heat"], position, atol=1e-5)


def test_config_files_in_the_repo_build_a_model():
    """configs/*.json (``evtp train --config``) hold valid ReferenceConfig overrides."""
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "configs").glob("*.json"))
    assert files
    for f in files:
        over = json.loads(f.read_text())
        # a tiny LM deep enough for every layer the file names
        depth = max([2, over.get("role_layer", 0), *over.get("align_layers", [])])
        model = tiny(**over, lm_layers=depth)
        assert model.lm is not None, f
    # the v2 stage's file on the defaults is the configuration of runs/v2/ckpt.pt (the point stage's --init)
    root = Path(__file__).parent.parent
    v2 = torch.load(root / "runs" / "v2" / "ckpt.pt", map_location="cpu", weights_only=False)["config"]
    over = json.loads((root / "configs" / "reference_v2.json").read_text())
    assert ReferenceConfig.from_json({**ReferenceConfig().to_json(), **over}) == ReferenceConfig.from_json(v2)


def test_object_hits_counts_objects_with_a_kept_token_on_them():
    from evtp.bench.measures import object_hits, on_objects_share, target_hit
    from evtp.data.synthetic import object_cover

    labels = np.zeros((2, 8, 8), np.int16)  # 4x4 grid of 2-px patches, two frames
    labels[0, 0:2, 0:2] = 1  # object 0 fills patch (0, 0) of frame 0
    labels[1, 6:8, 6:8] = 2  # object 1 fills patch (3, 3) of frame 1
    labels[0, 4, 4] = 3  # object 2 covers a quarter of patch (2, 2) of frame 0
    cover = object_cover(labels, 3, 2)  # (2, 3, 16)
    assert cover.shape == (2, 3, 16) and cover[0, 0, 0] == 1.0 and cover[0, 2, 2 * 4 + 2] == 0.25
    pos = np.array([[f, r, c] for f in range(2) for r in range(4) for c in range(4)])
    idx = {tuple(p): i for i, p in enumerate(pos)}
    kept = np.array([idx[(0, 0, 0)], idx[(1, 3, 3)]])
    assert object_hits(kept, pos, cover, [0, 1, 2], [0, 1]) == pytest.approx(2 / 3)
    assert object_hits(kept, pos, cover, [1], [0, 1]) == 1.0
    # object 1 only exists in frame 1: a kept token at its place in frame 0 is not on it
    assert object_hits(np.array([idx[(0, 3, 3)]]), pos, cover, [1], [0, 1]) == 0.0
    assert object_hits(np.array([idx[(0, 2, 2)]]), pos, cover, [2], [0, 1]) == 1.0  # 25 % counts
    assert object_hits(np.array([idx[(0, 2, 2)]]), pos, cover, [2], [0, 1], min_share=0.5) == 0.0
    assert object_hits(np.array([], int), pos, cover, [0], [0, 1]) == 0.0
    assert object_hits(kept, pos, cover, [], [0, 1]) is None
    # kept tokens on some object: (0, 0, 0) and (1, 3, 3) yes, (0, 3, 3) and (1, 0, 0) no
    on = np.array([idx[(0, 0, 0)], idx[(1, 3, 3)], idx[(0, 3, 3)], idx[(1, 0, 0)]])
    assert on_objects_share(on, pos, cover, [0, 1]) == 0.5
    assert on_objects_share(np.array([], int), pos, cover, [0, 1]) is None
    # the target alone: the same answer as target_hit
    for k in (kept, np.array([idx[(0, 3, 3)]])):
        assert object_hits(k, pos, cover, [0], [0, 1]) == float(target_hit(k, pos, labels == 1, [0, 1], 2))


def test_reference_set_and_correlations():
    from evtp.bench.measures import reference_set as _reference_set
    from evtp.bench.report import correlations

    assert _reference_set({"target": 2, "members": [0, 2], "anchor": 3}) == [0, 2, 3]
    assert _reference_set({"target": 1, "members": [1], "anchor": None}) == [1]
    res = {m: {"1.0": {"ciou": 0.9, "target_hit": 1.0}, "0.2": {"ciou": a, "target_hit": h, "set_hit": h,
                                                           "coverage": {"mean_nn_feature": 1 - a}}}
           for m, a, h in (("a", 0.5, 0.9), ("b", 0.3, 0.5), ("c", 0.4, 0.8))}
    c = correlations("image", res)
    assert c["n"] == 3 and c["mean_nn_feature"] == pytest.approx(-1.0)
    assert c["target_hit"] == c["set_hit"] > 0.9 and "object_hit" not in c
    assert correlations("image", {"a": res["a"]}) == {}


def test_bench_methods_with_their_own_options(tmp_path):
    from evtp.cli.bench_reference import main
    from evtp.settings import parse_methods

    specs = parse_methods("evtp, evtp[saliency_weight=4;spatial_weight=0.5],dpp[eps=0]", METHODS)
    assert specs == [("evtp", "evtp", {}),
                     ("evtp[saliency_weight=4;spatial_weight=0.5]", "evtp",
                      {"saliency_weight": 4, "spatial_weight": 0.5}),
                     ("dpp[eps=0]", "dpp", {"eps": 0})]
    for bad, words in (("evtp[saliency_weight=4", "unbalanced"), ("evtp[nope=1]", "no option"),
                       ("evtp,evtp", "twice"), ("nomethod", "unknown method"), ("evtp[[x=1]]", "unbalanced")):
        with pytest.raises(ValueError, match=words):
            parse_methods(bad, METHODS)
    out = tmp_path / "m.json"
    assert main(["--samples", "2", "--methods", "evtp,evtp[saliency_weight=8]", "--keep", "0.1",
                 "--out", str(out), "--weights", "random-tiny", "--repeats", "1", "--overlays", "1",
                 "--no-plots", "--threads", "1"]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"evtp", "evtp[saliency_weight=8]"}
    recs = [json.loads(ln) for ln in (tmp_path / "m.records.jsonl").read_text().splitlines()[1:]]
    assert {r["method"] for r in recs} == set(res) and len(recs) == 4
    assert len(list((tmp_path / "m_overlays").glob("*.png"))) == 2


def test_pointer_hit_and_partial_measures():
    from evtp.bench.measures import pointer_hit
    from evtp.bench.report import optional_means as _optional_means

    gt = np.zeros((2, 8, 8), bool)
    gt[0, 2:4, 4:6] = True  # patch (1, 2) of a 4 x 4 grid of 2-px patches, frame 0 only
    gt[1, 0:2, 0:2] = True  # patch (0, 0) in frame 1
    pos = np.array([[f, r, c] for f in range(2) for r in range(4) for c in range(4)])
    kept = np.array([0 * 16 + 6, 0 * 16 + 0, 1 * 16 + 0])  # (0,1,2) on target, (0,0,0) not, (1,0,0) on
    assert pointer_hit(kept, np.array([2.0, 1.0, 0.0]), pos, gt, [0, 1], 2)
    assert not pointer_hit(kept, np.array([0.0, 1.0, 0.5]), pos, gt, [0, 1], 2)
    assert pointer_hit(kept, np.array([0.0, 1.0, 1.5]), pos, gt, [0, 1], 2)  # on the target in its own frame
    assert pointer_hit(np.array([], int), np.array([]), pos, gt, [0, 1], 2) is None
    # a measure that some (older, resumed) records lack is not averaged over the others
    recs = [{"set_hit": 1.0, "on_objects": None}, {"set_hit": 0.5, "on_objects": 0.2}, {"on_objects": None}]
    assert _optional_means(recs, ("set_hit", "on_objects")) == {"on_objects": 0.2}
    assert _optional_means(recs[:2], ("set_hit",)) == {"set_hit": 0.75}
    assert _optional_means([{"on_objects": None}], ("on_objects",)) == {}


def test_temporal_patch_lets_a_token_see_the_next_frame(video, image):
    """With temporal_patch=2 the token of LM frame f changes when raw frame f+1 changes (frame 1,
    which the LM does not read, for f = 0) and the last LM frame pairs with the one before it;
    with temporal_patch=1 tokens see their own frame only. Images work (a zero difference)."""
    g2 = 16 * 16
    fr = frames_to_tensor(video.frames, 256)
    moved = fr.clone()
    moved[:, 1] = moved[:, 1].flip(-1)
    for tp in (1, 2):
        m = tiny(temporal_patch=tp)
        with torch.no_grad():
            a = m.visual_tokens(m.encode_frames(fr)[0])
            b = m.visual_tokens(m.encode_frames(moved)[0])
        assert a.shape == (1, 5 * g2, 32)
        assert torch.equal(a[:, g2:], b[:, g2:])  # LM frames 2, 4, 5, 7 do not pair with frame 1
        assert torch.equal(a[:, :g2], b[:, :g2]) == (tp == 1)
        out = m.run(frames_to_tensor(image.frames, 256), [m.tok.encode(image.instruction)], keep=0.2)
        assert out["masks"].shape == (1, 1, 256, 256)
    with pytest.raises(ValueError, match="temporal_patch"):
        tiny(temporal_patch=3)


def test_paired_cells_show_the_interval_and_bold_when_it_excludes_zero():
    from evtp.bench.report import paired_cell

    assert paired_cell({"diff": 0.01, "se": 0.01, "lo": -0.01, "hi": 0.03}) == "+0.010 [-0.010, +0.030]"
    assert paired_cell({"diff": -0.05, "se": 0.01, "lo": -0.07, "hi": -0.03}).startswith("**-0.050")
    assert paired_cell({"diff": 0.02, "se": 0.01}) == "+0.020 ± 0.010"  # older records


def test_device_and_dtype_are_checked_before_loading_and_bfloat16_predicts(image):
    import evtp.models.reference as ref

    with pytest.raises(ValueError, match="is not a model dtype"):
        ref.load_pretrained(dtype="int8")
    with pytest.raises(ValueError, match="evtp's models run on cpu or cuda"):
        ref.load_pretrained(device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here"):
            ref.load_pretrained(device="cuda")
    model = ref.load_pretrained(dtype="bfloat16")
    assert next(model.parameters()).dtype is torch.bfloat16
    p = model.predict(image, method="evtp", keep=0.2)
    assert p.masks.shape == image.gt_masks.shape and p.tokens_kept == round(0.2 * 256)


@pytest.mark.parametrize("task", ["image", "video"])
def test_reuse_encodings_gives_the_same_predictions(model, image, video, task):
    """Inside `reuse_encodings` the ViT and decoder features are computed once per frames and the
    predictions of every method (score-based ones included) equal those computed from scratch;
    other frames are never served from the memo, and leaving the context forgets it."""
    s = image if task == "image" else video
    other = make_sample("test", 1, task)
    calls = []
    hook = model.vit.register_forward_hook(lambda *a: calls.append(1))
    try:
        fresh = {m: model.predict(s, method=m, keep=0.2, generator=torch.Generator().manual_seed(0))
                 for m in ("evtp", "attention", "random")}
        n_fresh = len(calls)
        calls.clear()
        with model.reuse_encodings():
            for m in ("evtp", "attention", "random"):
                p = model.predict(s, method=m, keep=0.2, generator=torch.Generator().manual_seed(0))
                assert np.array_equal(p.masks, fresh[m].masks)
                assert np.array_equal(p.extra["kept"], fresh[m].extra["kept"])
            assert len(calls) == 2  # once without and once with attention scores
            q = model.predict(other, method="evtp", keep=0.2)
            assert len(calls) == 3
        assert np.array_equal(q.masks, model.predict(other, method="evtp", keep=0.2).masks)
        assert model._memo is None and n_fresh == 3
    finally:
        hook.remove()


def test_bench_untimed_samples_record_no_timings_and_the_same_metrics(tmp_path):
    from evtp.cli.bench_reference import main

    recs = {}
    for timed in (0, 2):
        out = tmp_path / f"t{timed}.json"
        assert main(["--samples", "2", "--methods", "evtp,attention", "--keep", "1.0,0.2", "--out", str(out),
                     "--weights", "random-tiny", "--repeats", "1", "--timed-samples", str(timed),
                     "--overlays", "0", "--threads", "1"]) == 0
        # no speed-up plot without timings; the accuracy plot either way
        assert (tmp_path / f"t{timed}_speedup.png").exists() == bool(timed)
        assert (tmp_path / f"t{timed}_accuracy.png").exists()
        lines = (tmp_path / f"t{timed}.records.jsonl").read_text().splitlines()[1:]
        recs[timed] = [json.loads(ln) for ln in lines]
    assert all(r["timings_ms"] == {} and not r["timed"] for r in recs[0])
    assert all(r["timings_ms"] and r["timed"] for r in recs[2])
    assert [(r["method"], r["keep"], r["metrics"]) for r in recs[0]] == \
        [(r["method"], r["keep"], r["metrics"]) for r in recs[2]]
    res = json.loads((tmp_path / "t0.json").read_text())
    assert np.isnan(res["evtp"]["0.2"]["total_ms"]) and res["evtp"]["0.2"]["ciou"] >= 0


def test_bench_cli_hard_textured_scenes(tmp_path):
    """--difficulty hard --textured runs the hard families' scenes, records each sample's family
    and keeps the scene settings in the records header (a standard run's records do not resume it)."""
    from evtp.cli.bench_reference import main
    from evtp.data.synthetic import HARD_IMAGE_FAMILIES, make_sample

    out = tmp_path / "h.json"
    argv = ["--samples", "2", "--methods", "evtp", "--keep", "0.2", "--out", str(out), "--weights", "random-tiny",
            "--repeats", "1", "--timed-samples", "0", "--overlays", "0", "--no-plots", "--threads", "1"]
    assert main(argv + ["--difficulty", "hard", "--textured"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "h.records.jsonl").read_text().splitlines()]
    assert lines[0]["header"]["difficulty"] == "hard" and lines[0]["header"]["textured"] is True
    want = [make_sample("test", i, "image", difficulty="hard", textured=True).family for i in range(2)]
    assert [r["family"] for r in lines[1:]] == want and set(want) <= set(HARD_IMAGE_FAMILIES)
    assert "nan" not in (tmp_path / "h.md").read_text()  # untimed runs print "-" for their timings
    with pytest.raises(SystemExit):  # the same --out with standard scenes: other settings, refused
        main(argv)
    with pytest.raises(SystemExit):
        main(argv + ["--difficulty", "harder"])
