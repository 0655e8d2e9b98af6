"""RefCOCO, RefCOCO+ and RefCOCOg in the refer format (one sample per referring sentence).

Files (as distributed by the refer toolkit and used by LISA / Sa2VA)::

    ROOT/                      # e.g. refer_seg/ ; ROOT may also be the refcoco/ folder itself
      refcoco/   refs(unc).p  instances.json
      refcoco+/  refs(unc).p  instances.json
      refcocog/  refs(umd).p  instances.json
      images/mscoco/images/train2014/COCO_train2014_000000000009.jpg ...

``refs(*).p`` is a pickled list of refs ``{ref_id, ann_id, image_id, split, sentences: [{sent_id,
sent, raw, tokens}], ...}``; ``instances.json`` is COCO-style ``images`` (``id, file_name, height,
width``) and ``annotations`` (``id, image_id, segmentation`` as polygons or RLE). The ground-truth
mask of a sentence is its ref's annotation, rasterised with pycocotools.
"""
from __future__ import annotations

from pathlib import Path

from evtp.data.readers import (DatasetReader, SampleError, coco_segmentation_mask, first_existing,
                               load_json, load_pickle, load_rgb)
from evtp.data.types import Sample


class _Refer(DatasetReader):
    task = "image"
    folder = ""
    split_by = "unc"

    def __init__(self, root, split, *, image_dir: str | Path | None = None,
                 split_by: str | None = None, **options):
        super().__init__(root, split, **options)
        split_by = split_by or self.split_by
        ref_name = f"refs({split_by}).p"
        ds_dir = first_existing([self.root / self.folder / ref_name, self.root / ref_name])
        if ds_dir is None:
            raise FileNotFoundError(f"{self.name}: cannot find {ref_name!r} in {str(self.root)!r} "
                                    f"or {str(self.root / self.folder)!r}; see docs/benchmarks/refcoco.md")
        ds_dir = ds_dir.parent
        inst_path = ds_dir / "instances.json"
        if not inst_path.is_file():
            raise FileNotFoundError(f"{self.name}: {str(inst_path)!r} is missing")
        if image_dir is not None:
            img_dir = Path(image_dir).expanduser()
        else:
            cands = [base / sub for base in (self.root, ds_dir, self.root.parent)
                     for sub in ("images/mscoco/images/train2014", "images/train2014", "train2014",
                                 "coco/train2014")]
            img_dir = first_existing(cands)
            if img_dir is None:
                raise FileNotFoundError(f"{self.name}: cannot find the COCO train2014 images under "
                                        f"{str(self.root)!r} (looked for images/mscoco/images/"
                                        f"train2014 and train2014); pass image_dir=PATH")
        if not img_dir.is_dir():
            raise FileNotFoundError(f"{self.name}: image_dir {str(img_dir)!r} is not a directory")
        self.image_dir = img_dir
        refs = load_pickle(ds_dir / ref_name)
        present = sorted({str(r.get("split")) for r in refs})
        self.refs = [r for r in refs if r.get("split") == split]
        if not self.refs:
            raise ValueError(f"{self.name}: {ref_name} has no refs in split {split!r}; its splits "
                             f"are: {', '.join(present)}")
        inst = load_json(inst_path)
        self.images = {int(im["id"]): im for im in inst["images"]}
        needed = {int(r["ann_id"]) for r in self.refs}
        self.anns = {int(a["id"]): a for a in inst["annotations"] if int(a["id"]) in needed}
        self._by_id: dict[str, tuple[dict, dict]] = {}
        for ref in self.refs:
            for sent in ref["sentences"]:
                sid = f"{self.name}/{split}/{ref['ref_id']}/{sent['sent_id']}"
                self._by_id[sid] = (ref, sent)

    def ids(self) -> list[str]:
        return list(self._by_id)

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._by_id:
            raise SampleError(sample_id, f"no such sentence in {self.name} {self.split}")
        ref, sent = self._by_id[sample_id]
        text = str(sent.get("sent", sent.get("raw", ""))).strip()
        if not text:
            raise SampleError(sample_id, "empty referring expression")
        image_id, ann_id = int(ref["image_id"]), int(ref["ann_id"])
        if image_id not in self.images:
            raise SampleError(sample_id, f"image_id {image_id} is not in instances.json")
        if ann_id not in self.anns:
            raise SampleError(sample_id, f"ann_id {ann_id} is not in instances.json")
        info = self.images[image_id]
        h, w = int(info["height"]), int(info["width"])
        image = load_rgb(self.image_dir / info["file_name"], sample_id)
        if image.shape[:2] != (h, w):
            raise SampleError(sample_id, f"image {info['file_name']} is {image.shape[0]}x"
                                         f"{image.shape[1]} but instances.json says {h}x{w}")
        mask = coco_segmentation_mask(self.anns[ann_id]["segmentation"], h, w, sample_id)
        meta = {"dataset": self.name, "split": self.split, "ref_id": int(ref["ref_id"]),
                "sent_id": int(sent["sent_id"]), "image_id": image_id, "ann_id": ann_id,
                "category_id": int(ref.get("category_id", -1)), "file_name": info["file_name"]}
        return Sample(sample_id=sample_id, frames=image[None], instruction=text,
                      gt_masks=mask[None].astype(bool), task="image", family="", meta=meta)


class RefCOCO(_Refer):
    name, folder, split_by = "refcoco", "refcoco", "unc"
    splits = ("val", "testA", "testB", "train")


class RefCOCOPlus(_Refer):
    name, folder, split_by = "refcoco+", "refcoco+", "unc"
    splits = ("val", "testA", "testB", "train")


class RefCOCOg(_Refer):
    name, folder, split_by = "refcocog", "refcocog", "umd"
    splits = ("val", "test", "train")


__all__ = ["RefCOCO", "RefCOCOPlus", "RefCOCOg"]
