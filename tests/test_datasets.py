"""Benchmark readers on small fixtures generated in the exact distributed formats."""
import json
import pickle

import numpy as np
import pytest

from evtp.data import DATASETS, Sample, SampleError, open_dataset
from fixtures.ivs_formats import box_mask, make_reasonseg, make_refcoco, make_refvos, rle_json


# ---------------------------------------------------------------- RefCOCO / + / g

@pytest.mark.parametrize("name", ["refcoco", "refcoco+", "refcocog"])
def test_refcoco_reads_one_sample_per_sentence(tmp_path, name):
    info = make_refcoco(tmp_path, name)
    split = "val"
    ds = open_dataset(name, tmp_path, split)
    want = [sid for s, sid in info["ids"] if s == split]
    assert ds.ids() == want and len(ds) == len(want)
    for sample in ds:
        assert isinstance(sample, Sample) and sample.task == "image"
        assert sample.frames.dtype == np.uint8 and sample.frames.shape[0] == 1
        assert sample.gt_masks.shape == sample.frames.shape[:3] and sample.gt_masks.dtype == bool
        h, w = sample.frames.shape[1:3]
        np.testing.assert_array_equal(sample.gt_masks[0],
                                      box_mask(h, w, info["boxes"][sample.meta["ann_id"]]))
        assert sample.instruction.startswith("the red box")
    # the RLE-segmented annotation (image 2) is in testB for refcoco, val for refcocog
    other = "testB" if name != "refcocog" else "test"
    assert len(open_dataset(name, tmp_path, other)) >= 1


def test_refcoco_accepts_dataset_folder_as_root(tmp_path):
    make_refcoco(tmp_path, "refcoco")
    ds = open_dataset("refcoco", tmp_path / "refcoco", "testA")
    assert len(ds) == 1 and ds.load(ds.ids()[0]).meta["image_id"] == 101


def test_refcoco_unknown_split_lists_valid_ones(tmp_path):
    make_refcoco(tmp_path, "refcoco")
    with pytest.raises(ValueError, match="valid splits: val, testA, testB"):
        open_dataset("refcoco", tmp_path, "testC")
    make_refcoco(tmp_path, "refcocog")
    with pytest.raises(ValueError, match="valid splits: val, test, train"):
        open_dataset("refcocog", tmp_path, "testA")


def test_refcoco_bad_inputs_name_the_sample(tmp_path):
    make_refcoco(tmp_path, "refcoco")
    img_dir = tmp_path / "images/mscoco/images/train2014"
    (img_dir / "COCO_train2014_000000000100.jpg").unlink()
    ds = open_dataset("refcoco", tmp_path, "val")
    sid = ds.ids()[0]
    with pytest.raises(SampleError, match=f"sample {sid}: image file .* is missing"):
        ds.load(sid)
    (img_dir / "COCO_train2014_000000000101.jpg").write_bytes(b"\xff\xd8\xff\xe0not a jpeg")
    ds = open_dataset("refcoco", tmp_path, "testA")
    with pytest.raises(SampleError, match="cannot decode image"):
        ds.load(ds.ids()[0])


def test_refcoco_missing_files_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        open_dataset("refcoco", tmp_path / "nope", "val")
    with pytest.raises(FileNotFoundError, match=r"refs\(unc\)\.p"):
        open_dataset("refcoco", tmp_path, "val")


# ---------------------------------------------------------------- ReasonSeg

def test_reasonseg_masks_ignore_and_families(tmp_path):
    boxes = make_reasonseg(tmp_path)
    ds = open_dataset("reasonseg", tmp_path, "val")
    assert ds.ids() == ["reasonseg/val/a", "reasonseg/val/b", "reasonseg/val/c"]
    a = ds.load("reasonseg/val/a")
    assert a.instruction == "what is the red thing?" and a.family == "long"
    np.testing.assert_array_equal(a.gt_masks[0], box_mask(48, 64, boxes["a"][0]))
    assert not a.meta["ignore_mask"].any()
    b = ds.load("reasonseg/val/b")
    assert b.instruction == "the red object" and b.family == "short"
    target, ignore = box_mask(48, 64, boxes["b"][0]), box_mask(48, 64, boxes["b"][1])
    # the smaller "ignore" polygon is drawn after the larger target and wins where they overlap
    np.testing.assert_array_equal(b.meta["ignore_mask"][0], ignore)
    np.testing.assert_array_equal(b.gt_masks[0], target & ~ignore)


def test_reasonseg_all_texts_and_bad_json(tmp_path):
    make_reasonseg(tmp_path)
    ds = open_dataset("reasonseg", tmp_path, "val", all_texts=True)
    assert ds.ids()[:3] == ["reasonseg/val/a#0", "reasonseg/val/a#1", "reasonseg/val/b#0"]
    assert ds.load("reasonseg/val/a#1").instruction == "second query"
    (tmp_path / "val" / "c.json").write_text(json.dumps({"text": ["  "], "shapes": []}))
    with pytest.raises(SampleError, match="reasonseg/val/c#0: empty query text"):
        ds.load("reasonseg/val/c#0")
    (tmp_path / "val" / "c.json").unlink()
    with pytest.raises(SampleError, match="annotation .* is missing"):
        open_dataset("reasonseg", tmp_path, "val").load("reasonseg/val/c")


# ---------------------------------------------------------------- video benchmarks

@pytest.mark.parametrize("flavor", ["mevis", "revos", "ref-davis"])
def test_refvos_reads_expressions_with_rle_and_null_frames(tmp_path, flavor):
    info = make_refvos(tmp_path, flavor)
    split = {"mevis": "valid_u", "revos": "valid", "ref-davis": "valid"}[flavor]
    ds = open_dataset(flavor, tmp_path, split)
    assert ds.ids() == info["ids"]
    for sid in ds.ids():
        s = ds.load(sid)
        assert s.task == "video" and s.frames.shape == (3, 40, 56, 3)
        np.testing.assert_array_equal(s.gt_masks, info["gt"][sid])
    absent = ds.load(f"{flavor}/{split}/vid0/1")  # object 1 is null in frame 1
    assert absent.gt_masks[0].any() and not absent.gt_masks[1].any()
    if flavor == "revos":
        assert ds.overall == "families"
        assert [ds.load(i).family for i in ds.ids()[:2]] == ["referring", "reasoning"]
        fg = absent.meta["foreground_masks"]
        assert fg.shape == absent.gt_masks.shape and (fg | absent.gt_masks).sum() == fg.sum()
    else:
        assert absent.family == ""


def test_refvos_split_without_masks_has_no_ground_truth(tmp_path):
    info = make_refvos(tmp_path, "mevis", split="valid")
    info["mask_path"].unlink()
    ds = open_dataset("mevis", tmp_path, "valid")
    assert ds.load(ds.ids()[0]).gt_masks is None


def test_refvos_bad_inputs(tmp_path):
    info = make_refvos(tmp_path, "mevis")
    ds = open_dataset("mevis", tmp_path, "valid_u")
    sid = "mevis/valid_u/vid0/0"
    # corrupt JPEG
    (info["frame_dir"] / "vid0" / "00001.jpg").write_bytes(b"garbage")
    with pytest.raises(SampleError, match=f"sample {sid}: cannot decode image"):
        ds.load(sid)
    # missing frame
    (info["frame_dir"] / "vid0" / "00001.jpg").unlink()
    with pytest.raises(SampleError, match="00001.jpg' is missing"):
        ds.load(sid)
    # mask size mismatch
    masks = json.loads(info["mask_path"].read_text())
    masks["2"][0] = rle_json(np.ones((10, 10), bool))  # vid1 / anno 2 is 40x56
    info["mask_path"].write_text(json.dumps(masks))
    meta = json.loads(info["meta_path"].read_text())
    meta["videos"]["vid1"]["expressions"]["1"]["exp"] = "   "
    info["meta_path"].write_text(json.dumps(meta))
    ds = open_dataset("mevis", tmp_path, "valid_u")
    with pytest.raises(SampleError, match="mevis/valid_u/vid1/0: anno_id 2 frame 0 mask is 10x10 but the frame is 40x56"):
        ds.load("mevis/valid_u/vid1/0")
    with pytest.raises(SampleError, match="vid1/1: empty expression"):
        ds.load("mevis/valid_u/vid1/1")
    with pytest.raises(ValueError, match="valid splits: valid_u, valid, train"):
        open_dataset("mevis", tmp_path, "val")


def test_davis_pickle_and_registry(tmp_path):
    info = make_refvos(tmp_path, "ref-davis")
    with open(info["mask_path"], "rb") as fh:
        assert isinstance(pickle.load(fh), dict)
    assert {"refcoco", "refcoco+", "refcocog", "reasonseg", "mevis", "ref-youtube-vos", "revos",
            "ref-davis"} <= set(DATASETS)
    with pytest.raises(ValueError, match="unknown dataset 'coco'; known datasets"):
        open_dataset("coco", tmp_path, "val")
    with pytest.raises(TypeError, match="unknown options: bogus"):
        open_dataset("ref-davis", tmp_path, "valid", bogus=1)
