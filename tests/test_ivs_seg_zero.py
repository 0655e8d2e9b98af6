"""`evtp eval --model seg-zero` end to end on a tiny Qwen2.5-VL reasoning segmenter and a tiny
transformers SAM2, both written in the released layouts and loaded with ``from_pretrained``
offline, on the image and video benchmark fixtures, pruning on and off, resume; and the answer
parser on the Seg-Zero and VisionReasoner formats and on text it cannot read."""
import json
import shutil

import numpy as np
import pytest
from hypothesis import given, strategies as st

from evtp.cli.eval import main
from evtp.eval.records import read_records
from evtp.models.seg_zero import FORMATS, Target, parse_answer
from evtp.testing.checkpoints import (SEG_ZERO_ANSWER, VISIONREASONER_ANSWER, steer, write_not_a_checkpoint,
                                      write_qwen2_5_vl, write_sam2)
from fixtures.ivs_formats import make_refcoco, make_refvos


# ---------------------------------------------------------------- the answer parser

def test_parses_both_projects_formats():
    targets, reason = parse_answer(SEG_ZERO_ANSWER)
    assert reason is None and targets == [Target((20, 30, 60, 70), ((35, 45), (45, 55)))]
    # Seg-Zero's own example answer is a Python literal (single quotes)
    targets, _ = parse_answer("<think> x </think><answer>" + FORMATS["seg-zero"].example + "</answer>")
    assert targets == [Target((10, 100, 200, 210), ((30, 110), (35, 180)))]
    targets, _ = parse_answer("<answer>" + FORMATS["visionreasoner"].example + "</answer>")
    assert targets == [Target((10, 100, 200, 210), ((30, 110),)), Target((225, 296, 706, 786), ((302, 410),))]
    # no answer tags: the JSON objects of the text (Seg-Zero's own parser reads the first)
    assert parse_answer('it is {"bbox_2d": [1, 2, 3, 4]} here')[0] == [Target((1, 2, 3, 4), ())]


@pytest.mark.parametrize("text, reason", [
    ("I cannot see it.", "no <answer>...</answer> block and no JSON object"),
    ('<answer> {"bbox": [20,30,60,70], </answer>', "not valid JSON"),
    ('<answer> {"bbox": [60,30,20,70]} </answer>', "no object with a 'bbox' of 4 numbers"),
    ('<answer> [{"point_2d": [1, 2]}] </answer>', "no object with a 'bbox'"),
    ('<answer> {"bbox": [1, 2, "x", 4]} </answer>', "no object with a 'bbox'"),
])
def test_unreadable_answers_give_a_reason(text, reason):
    targets, why = parse_answer(text)
    assert targets == [] and reason in why


@given(st.text(max_size=200))
def test_parser_never_raises(text):
    targets, reason = parse_answer(text)
    assert (reason is None) == bool(targets)
    for t in targets:
        assert len(t.box) == 4 and t.box[0] <= t.box[2] and t.box[1] <= t.box[3]


# ---------------------------------------------------------------- evtp eval

pytestmark = pytest.mark.usefixtures("hf_hub_offline")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_zero")
    make_refcoco(root / "refer", "refcoco")
    make_refvos(root / "mevis", "mevis")
    return {"reasoner": write_qwen2_5_vl(root / "VisionReasoner-tiny", answer=VISIONREASONER_ANSWER),
            "sam": write_sam2(root / "sam2.1-tiny"), "root": root}


def run(out, ckpts, dataset, split, *extra, keep="1.0", path=None, sam_path=None, engine=None):
    opts = {"path": path or ckpts["reasoner"], "sam_path": sam_path or ckpts["sam"], "dtype": "float32",
            "answer_format": "visionreasoner", "resize": 112, "max_new_tokens": 24}
    if engine:
        opts["engine"] = engine
    argv = ["--model", "seg-zero"]
    for k, v in opts.items():
        argv += ["--model-option", f"{k}={v}"]
    root = ckpts["root"] / ("refer" if dataset == "refcoco" else "mevis")
    return main([*argv, "--dataset", dataset, "--root", str(root), "--split", split, "--method", "evtp",
                 "--keep", keep, "--out", str(out), "--no-progress", *extra])


def summary(out):
    return json.loads((out / "summary.json").read_text())


def test_image_benchmark_pruning_on_and_off(ckpts, tmp_path):
    for keep, kept, n in (("1.0", 16, 1), ("0.5", 8, 2)):  # 112-px image: 8x8 patches, 2x2 merge -> 16 tokens
        out = tmp_path / keep
        assert run(out, ckpts, "refcoco", "val", "--limit", str(n), keep=keep) == 0
        s = summary(out)
        assert s["counts"]["ok"] == n and s["counts"]["no_mask"] == 0
        assert [(r["tokens_kept"], r["tokens_total"]) for r in read_records(out / "samples.jsonl")[0]] == [(kept, 16)] * n


def test_video_benchmark_and_resume(ckpts, tmp_path):
    """The first frame to the reasoning model, SAM2 video propagation over every frame; a run cut
    short (records plus a torn line, what a kill leaves) and resumed equals an uninterrupted one."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(full, ckpts, "mevis", "valid_u", "--limit", "2", keep="0.25") == 0
    s = summary(full)
    assert s["counts"]["ok"] == 2 and s["counts"]["no_mask"] == 0
    assert all(r["tokens_kept"] == 4 for r in read_records(full / "samples.jsonl")[0])
    assert run(part, ckpts, "mevis", "valid_u", "--limit", "1", keep="0.25") == 0
    lines = (part / "samples.jsonl").read_bytes()
    (part / "samples.jsonl").unlink()
    (part / "parts").mkdir(exist_ok=True)
    torn = (full / "samples.jsonl").read_bytes().split(b"\n")[1]
    (part / "parts" / "rank0.jsonl").write_bytes(lines + torn[: len(torn) // 2])
    assert run(part, ckpts, "mevis", "valid_u", "--limit", "2", keep="0.25") == 0
    assert summary(part)["metrics"] == s["metrics"] and summary(part)["counts"] == s["counts"]


def test_unreadable_answer_is_an_empty_mask_with_its_reason(ckpts, tmp_path):
    bad = steer(shutil.copytree(ckpts["reasoner"], tmp_path / "malformed"), '<answer> {"bbox": [20,30,60,70], </answer>')
    out = tmp_path / "run"
    assert run(out, ckpts, "refcoco", "val", "--limit", "1", keep="0.5", path=bad) == 0
    s = summary(out)
    assert s["counts"]["ok"] == 1 and s["counts"]["no_mask"] == 1 and s["counts"]["failed"] == 0
    row = read_records(out / "samples.jsonl")[0][0]
    assert row["no_mask"] and "not valid JSON" in row["no_mask_reason"]
    assert '{"bbox": [20,30,60,70], </answer>' in row["no_mask_reason"]  # the raw answer


def test_bad_checkpoints_are_refused_before_any_sample(ckpts, tmp_path, capsys):
    bert = write_not_a_checkpoint(tmp_path / "bert")
    cases = [
        (dict(path=tmp_path / "nowhere"), "no such folder; expected a Qwen2.5-VL reasoning segmenter"),
        (dict(path=bert), "a BertModel checkpoint; expected a Qwen2.5-VL reasoning segmenter"),
        (dict(sam_path=bert), "model_type 'bert'; expected a transformers SAM2 checkpoint"),
        (dict(engine="vllm"), "engine=vllm: vLLM is not installed here"),
    ]
    for i, (kw, message) in enumerate(cases):
        out = tmp_path / f"r{i}"
        assert run(out, ckpts, "refcoco", "val", **kw) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists() or not any(out.iterdir())


def test_missing_and_misplaced_options_name_themselves(ckpts):
    from evtp.models.checkpoint import CheckpointError
    from evtp.models.seg_zero import load_seg_zero

    with pytest.raises(CheckpointError, match=r"^path: not given; expected a Qwen2.5-VL reasoning segmenter"):
        load_seg_zero(sam_path=str(ckpts["sam"]))
    with pytest.raises(CheckpointError, match=r"^sam_path: not given; expected a transformers SAM2 checkpoint"):
        load_seg_zero(path=str(ckpts["reasoner"]))
    with pytest.raises(CheckpointError, match=r"^sam_path='.*reasoner-nowhere': no such folder"):
        load_seg_zero(path=str(ckpts["reasoner"]), sam_path=str(ckpts["root"] / "reasoner-nowhere"))
    with pytest.raises(CheckpointError, match=r"vllm_args=.*with engine=vllm only"):
        load_seg_zero(path=str(ckpts["reasoner"]), sam_path=str(ckpts["sam"]), vllm_args={"max_model_len": 8})
    with pytest.raises(CheckpointError, match=r"answer_format='lisa'; expected one of seg-zero, visionreasoner"):
        load_seg_zero(path=str(ckpts["reasoner"]), sam_path=str(ckpts["sam"]), answer_format="lisa")


def test_masks_follow_the_answer(ckpts):
    """The box the model wrote (112-px frame) lands on the original frame's pixels; masks at the
    frame size, one per frame."""
    from evtp.data import open_dataset
    from evtp.models.seg_zero import load_seg_zero

    model = load_seg_zero(path=str(ckpts["reasoner"]), sam_path=str(ckpts["sam"]), answer_format="visionreasoner",
                          resize=112, max_new_tokens=24, dtype="float32")
    sample = next(iter(open_dataset("refcoco", ckpts["root"] / "refer", "val")))
    H, W = np.asarray(sample.frames).shape[1:3]
    pred = model.predict(sample, method="uniform", keep=0.5)
    assert pred.masks.shape == (1, H, W) and pred.masks.dtype == bool
    np.testing.assert_allclose(pred.extra["boxes"], [[20 * W / 112, 30 * H / 112, 60 * W / 112, 70 * H / 112]])


def test_seg_zero_format_end_to_end(ckpts, tmp_path):
    """Seg-Zero's own format (the default): one bbox and two points (points_1, points_2)."""
    from evtp.data import open_dataset
    from evtp.models.seg_zero import load_seg_zero

    path = steer(shutil.copytree(ckpts["reasoner"], tmp_path / "Seg-Zero-tiny"), SEG_ZERO_ANSWER)
    model = load_seg_zero(path=str(path), sam_path=str(ckpts["sam"]), resize=112, max_new_tokens=24, dtype="float32")
    sample = next(iter(open_dataset("refcoco", ckpts["root"] / "refer", "val")))
    H, W = np.asarray(sample.frames).shape[1:3]
    pred = model.predict(sample, method="evtp", keep=0.25)
    assert pred.extra["answer"] == SEG_ZERO_ANSWER and pred.masks.shape == (1, H, W)
    assert (pred.tokens_kept, pred.tokens_total) == (4, 16)
    assert "Please find 'the" in FORMATS["seg-zero"].question("The red box.")  # the template, lower-cased query
