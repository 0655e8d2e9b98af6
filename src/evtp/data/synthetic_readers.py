"""The synthetic benchmark (`evtp.data.synthetic`) behind the reader interface: datasets
``synthetic-image`` and ``synthetic-video``.

Nothing is read from disk (``root`` is ignored); a sample is generated from its id. Options (all
given as ``--dataset-option KEY=VALUE`` strings on the command line):

* ``n``: samples (default 200).  ``seed_offset``: shift of the split's seed range (default 0).
* ``difficulty``: "standard" (default) or "hard".
* ``family``: only this expression family (default: the difficulty's mix).
* ``textured``: "true" gives every plain object a texture that moves with it (default false).
* ``shuffle_frames`` (video): "true" gives each clip's frame-shuffled control (default false).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from evtp.data.readers import DatasetOptionError, DatasetReader, SampleError, int_option
from evtp.data.types import Sample

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise DatasetOptionError(f"{name}={value!r}: give true or false")


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise DatasetOptionError(f"{name}={value!r}: give one of {', '.join(choices)}")
    return value


class SyntheticReader(DatasetReader):
    """The procedurally generated benchmark; see the module docstring for the options."""

    splits = ("train", "val", "test")

    def __init__(self, root, split, *, n: int | str = 200, seed_offset: int | str = 0,
                 difficulty: str = "standard", family: str | None = None, textured: bool | str = False,
                 shuffle_frames: bool | str = False, **unknown):
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r} for dataset {self.name!r}; valid splits: "
                             f"{', '.join(self.splits)}")
        if unknown:
            raise DatasetOptionError(f"dataset {self.name!r} got unknown options: {', '.join(sorted(unknown))}; "
                                     f"it takes n, seed_offset, difficulty, family, textured, shuffle_frames")
        self._synthetic = importlib.import_module("evtp.data.synthetic")
        self.root, self.split = Path(root or "."), split
        self.n, self.seed_offset = int_option("n", n, 1), int_option("seed_offset", seed_offset, 0)
        self.difficulty = _choice("difficulty", difficulty, self._synthetic.DIFFICULTIES)
        gens, _ = self._synthetic.families(self.task, difficulty)
        self.family = None if family is None else _choice("family", family, sorted(gens))
        self.textured = _flag("textured", textured)
        self.shuffle_frames = _flag("shuffle_frames", shuffle_frames)
        if self.shuffle_frames and self.task != "video":
            raise DatasetOptionError(f"shuffle_frames={shuffle_frames!r}: the frame-order control applies to "
                                     f"synthetic-video only")

    def _id(self, index: int) -> str:
        return self._synthetic.sample_id(self.split, self.task, index, difficulty=self.difficulty,
                                         textured=self.textured, shuffled=self.shuffle_frames)

    def ids(self) -> list[str]:
        return [self._id(i + self.seed_offset) for i in range(self.n)]

    def load(self, sample_id: str) -> Sample:
        prefix = self._id(0)[:-1]
        tail = sample_id[len(prefix):] if sample_id.startswith(prefix) else ""
        if not tail.isdigit():
            raise SampleError(sample_id, f"not an id of this split and these options (expected {prefix}<index>)")
        sample = self._synthetic.make_sample(self.split, int(tail) - self.seed_offset, self.task,
                                             seed_offset=self.seed_offset, difficulty=self.difficulty,
                                             family=self.family, textured=self.textured)
        return self._synthetic.shuffle_frames(sample) if self.shuffle_frames else sample

    def describe(self) -> dict:
        return {**super().describe(), "difficulty": self.difficulty, "family": self.family,
                "textured": self.textured, "shuffle_frames": self.shuffle_frames}


class SyntheticImage(SyntheticReader):
    name, task = "synthetic-image", "image"


class SyntheticVideo(SyntheticReader):
    name, task = "synthetic-video", "video"
