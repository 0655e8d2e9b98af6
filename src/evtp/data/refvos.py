"""Referring / reasoning video object segmentation: MeViS, Ref-YouTube-VOS, ReVOS, Ref-DAVIS17.

All four share one format (one sample per expression, all frames of the video):

* JPEG frame folders ``JPEGImages/<video_id>/<frame>.jpg``;
* ``meta_expressions.json``: ``{"videos": {video_id: {"frames": [frame names],
  "expressions": {exp_id: {"exp": text, "anno_id": [..], "obj_id": [..]}}}}}``; ReVOS adds
  ``type_id`` (0 referring, 1 reasoning) per expression;
* ``mask_dict.json`` (or ``mask_dict.pkl``): ``{str(anno_id): [COCO RLE or null per frame]}``;
  null means the object is absent in that frame. An expression's mask is the union of its
  ``anno_id`` objects. ReVOS also ships ``mask_dict_foreground.json``: ``{video_id: {"masks_rle":
  [RLE per frame]}}``, used by its R (robustness) metric.

Where each file lives differs per benchmark; each reader looks in the documented places (see
docs/benchmarks/). A split without masks (MeViS ``valid``, Ref-YouTube-VOS ``valid``: server-only)
yields samples with ``gt_masks=None``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evtp.data.readers import (DatasetFileError, DatasetReader, SampleError, decode_rle, first_existing,
                               load_json, load_pickle, load_rgb)
from evtp.data.types import Sample


class _RefVOS(DatasetReader):
    task = "video"
    uses_foreground = False

    def meta_candidates(self) -> list[Path]:
        r, s = self.root, self.split
        return [r / s / "meta_expressions.json", r / "meta_expressions" / s / "meta_expressions.json",
                r / f"meta_expressions_{s}_.json", r / f"meta_expressions_{s}.json"]

    def frame_dir_candidates(self) -> list[Path]:
        return [self.root / self.split / "JPEGImages", self.root / "JPEGImages"]

    def mask_candidates(self) -> list[Path]:
        r, s = self.root, self.split
        return [r / s / "mask_dict.json", r / s / "mask_dict.pkl", r / f"mask_dict_{s}.json",
                r / "mask_dict.json", r / "mask_dict.pkl"]

    def family_of(self, exp: dict) -> str:
        return ""

    def __init__(self, root, split, **options):
        super().__init__(root, split, **options)
        meta_path = first_existing(self.meta_candidates())
        if meta_path is None:
            raise FileNotFoundError(
                f"{self.name}: no expressions file for split {split!r}; looked for "
                + ", ".join(repr(str(p)) for p in self.meta_candidates()))
        frame_dir = first_existing(self.frame_dir_candidates())
        if frame_dir is None:
            raise FileNotFoundError(
                f"{self.name}: no frame folder; looked for "
                + ", ".join(repr(str(p)) for p in self.frame_dir_candidates()))
        self.meta_path, self.frame_dir = meta_path, frame_dir
        self.mask_path = first_existing(self.mask_candidates())
        self.foreground_path = self.root / "mask_dict_foreground.json"
        if self.uses_foreground and not self.foreground_path.is_file():
            self.foreground_path = None
        videos = load_json(meta_path)
        if not isinstance(videos, dict) or not isinstance(videos.get("videos"), dict):
            raise DatasetFileError(meta_path, "has no top-level 'videos' object")
        self.videos = videos["videos"]
        self._by_id: dict[str, tuple[str, str]] = {}
        for vid, info in self.videos.items():
            if not isinstance(info, dict) or not isinstance(info.get("expressions", {}), dict):
                raise DatasetFileError(meta_path, f"video {vid!r} is not an object with an 'expressions' "
                                                  f"object")
            for exp_id in info.get("expressions", {}):
                self._by_id[f"{self.name}/{split}/{vid}/{exp_id}"] = (vid, exp_id)
        self._masks = None
        self._foreground = None

    @property
    def has_masks(self) -> bool:
        return self.mask_path is not None

    def ids(self) -> list[str]:
        return list(self._by_id)

    def _mask_dict(self) -> dict:
        if self._masks is None:
            path = self.mask_path
            masks = load_pickle(path) if path.suffix == ".pkl" else load_json(path)
            if not isinstance(masks, dict):
                raise DatasetFileError(path, f"holds a {type(masks).__name__}; expected an object "
                                             f"{{anno_id: [RLE or null per frame]}}")
            self._masks = masks
        return self._masks

    def _foreground_dict(self) -> dict:
        if self._foreground is None:
            fg = load_json(self.foreground_path)
            if not isinstance(fg, dict):
                raise DatasetFileError(self.foreground_path, f"holds a {type(fg).__name__}; expected "
                                                             f"an object {{video_id: {{\"masks_rle\": [...]}}}}")
            self._foreground = fg
        return self._foreground

    def check(self) -> None:
        """Parse the mask files (they are read lazily otherwise, on the first sample)."""
        if self.has_masks:
            self._mask_dict()
        if self.uses_foreground and self.foreground_path is not None:
            self._foreground_dict()

    def _frames(self, sample_id: str, vid: str, names: list) -> np.ndarray:
        frames = []
        for name in names:
            img = load_rgb(self.frame_dir / vid / f"{name}.jpg", sample_id)
            if frames and img.shape != frames[0].shape:
                raise SampleError(sample_id, f"frame {name} is {img.shape[0]}x{img.shape[1]} but "
                                             f"frame {names[0]} is {frames[0].shape[0]}x"
                                             f"{frames[0].shape[1]}")
            frames.append(img)
        return np.stack(frames)

    def _rle_stack(self, sample_id, entries, n_frames, hw, what) -> np.ndarray:
        if not isinstance(entries, list) or len(entries) != n_frames:
            got = len(entries) if isinstance(entries, list) else type(entries).__name__
            raise SampleError(sample_id, f"{what} has {got} entries but the video has {n_frames} frames")
        out = np.zeros((n_frames, *hw), bool)
        for t, rle in enumerate(entries):
            if rle is None:
                continue
            m = decode_rle(rle, sample_id, f"{what} frame {t}")
            if m.shape != hw:
                raise SampleError(sample_id, f"{what} frame {t} mask is {m.shape[0]}x{m.shape[1]} "
                                             f"but the frame is {hw[0]}x{hw[1]}")
            out[t] |= m
        return out

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._by_id:
            raise SampleError(sample_id, f"no such expression in {self.name} {self.split}")
        vid, exp_id = self._by_id[sample_id]
        info = self.videos[vid]
        exp = info["expressions"][exp_id]
        text = str(exp.get("exp", "")).strip()
        if not text:
            raise SampleError(sample_id, "empty expression")
        names = list(info.get("frames", []))
        if not names:
            raise SampleError(sample_id, f"video {vid} lists no frames")
        frames = self._frames(sample_id, vid, names)
        hw = frames.shape[1:3]
        gt = None
        anno_ids = list(exp.get("anno_id") or [])
        if self.has_masks:
            if not anno_ids:
                raise SampleError(sample_id, f"expression {exp_id} of video {vid} has no anno_id in "
                                             f"{self.meta_path.name}, so it has no ground truth")
            masks = self._mask_dict()
            gt = np.zeros((len(names), *hw), bool)
            for aid in anno_ids:
                if str(aid) not in masks:
                    raise SampleError(sample_id, f"anno_id {aid} is not in {self.mask_path.name}")
                gt |= self._rle_stack(sample_id, masks[str(aid)], len(names), hw, f"anno_id {aid}")
        meta = {"dataset": self.name, "split": self.split, "video_id": vid, "exp_id": str(exp_id),
                "anno_id": anno_ids, "obj_id": list(exp.get("obj_id", [])),
                "frame_names": [str(n) for n in names]}
        if "type_id" in exp:
            meta["type_id"] = int(exp["type_id"])
        if self.uses_foreground and self.foreground_path is not None and gt is not None:
            fg = self._foreground_dict().get(vid)
            if fg is None:
                raise SampleError(sample_id, f"video {vid} is not in mask_dict_foreground.json")
            meta["foreground_masks"] = self._rle_stack(sample_id, fg.get("masks_rle"), len(names),
                                                       hw, "foreground mask")
        return Sample(sample_id=sample_id, frames=frames, instruction=text, gt_masks=gt,
                      task="video", family=self.family_of(exp), meta=meta)


class MeViS(_RefVOS):
    """MeViS: ``ROOT/{train,valid_u,valid}/{JPEGImages/, meta_expressions.json, mask_dict.json}``."""

    name = "mevis"
    splits = ("valid_u", "valid", "train")


class RefYouTubeVOS(_RefVOS):
    """Ref-YouTube-VOS: ``ROOT/{train,valid}/JPEGImages/``, ``ROOT/meta_expressions/<split>/
    meta_expressions.json``; masks only where a ``mask_dict.json`` is provided."""

    name = "ref-youtube-vos"
    splits = ("valid", "train", "test")


class ReVOS(_RefVOS):
    """ReVOS: ``ROOT/JPEGImages/``, ``ROOT/meta_expressions_{valid,train}_.json``,
    ``ROOT/mask_dict.json``, ``ROOT/mask_dict_foreground.json``. Families: referring / reasoning;
    the overall score is their unweighted mean (ReVOS's convention)."""

    name = "revos"
    splits = ("valid", "train")
    overall = "families"
    uses_foreground = True

    def family_of(self, exp: dict) -> str:
        t = exp.get("type_id")
        return {0: "referring", 1: "reasoning"}.get(int(t), str(t)) if t is not None else ""


class RefDAVIS(_RefVOS):
    """Ref-DAVIS17: ``ROOT/valid/JPEGImages/``, ``ROOT/meta_expressions/valid/meta_expressions.json``,
    ``ROOT/valid/mask_dict.pkl`` (or ``.json``)."""

    name = "ref-davis"
    splits = ("valid", "train")


__all__ = ["MeViS", "RefYouTubeVOS", "ReVOS", "RefDAVIS"]
