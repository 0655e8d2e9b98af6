"""Common machinery of the benchmark readers and the `DATASETS` registry.

A reader lists its sample ids cheaply (``ids()``) and loads one sample on demand (``load(id)``),
so an evaluation run can skip finished ids, shard the rest across processes and mark a sample
whose files are broken as failed without stopping. Loading errors are `SampleError` (a
ValueError) and always name the sample id. A broken file that every sample needs (an annotation
or mask file) is a `DatasetFileError` instead, naming the file: a run stops on it at once rather
than record every sample as failed (`DatasetReader.check` looks for it before a run starts).
"""
from __future__ import annotations

import importlib
import json
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from evtp.data.types import Sample


class SampleError(ValueError):
    """A sample cannot be loaded (missing file, corrupt image, inconsistent annotation ...)."""

    def __init__(self, sample_id: str, message: str):
        super().__init__(f"sample {sample_id}: {message}")
        self.sample_id = sample_id


class DatasetFileError(ValueError):
    """A file the whole data set needs (annotations, masks) is missing, truncated or corrupt."""

    def __init__(self, path: str | Path, message: str):
        super().__init__(f"{str(path)!r}: {message}")
        self.path = Path(path)


class DatasetOptionError(ValueError, TypeError):
    """A reader option is unknown or has a value the reader cannot use; the message names it."""


def int_option(name: str, value: Any, low: int) -> int:
    """A reader option that must be an integer >= ``low`` (an int, or text holding one)."""
    try:
        number = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < low:
        raise DatasetOptionError(f"{name}={value!r}: give an integer >= {low}")
    return number


class DatasetReader:
    """Base class: subclasses set the class attributes and implement ``ids`` and ``load``.

    Attributes:
        name: registry name.  task: "image" or "video".  splits: the valid split names.
        overall: how the overall score is formed: "expressions" (mean over all samples) or
            "families" (unweighted mean of the family scores, ReVOS's convention).
    """

    name: str = ""
    task: str = "image"
    splits: tuple[str, ...] = ()
    overall: str = "expressions"

    def __init__(self, root: str | Path, split: str, **options: Any):
        self.root = Path(root).expanduser()
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r} for dataset {self.name!r}; valid splits: "
                             f"{', '.join(self.splits)}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {str(self.root)!r} is not a directory; pass "
                                    f"--root pointing at the {self.name} folder "
                                    f"(see docs/benchmarks/)")
        self.split = split
        if options:
            raise DatasetOptionError(f"dataset {self.name!r} got unknown options: {', '.join(sorted(options))}")

    def ids(self) -> list[str]:
        raise NotImplementedError

    def load(self, sample_id: str) -> Sample:
        raise NotImplementedError

    def check(self) -> None:
        """Read the files every sample needs (e.g. a lazily loaded mask file) and raise
        `DatasetFileError` if one is broken; a no-op for readers that read them on opening."""

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[Sample]:
        for sid in self.ids():
            yield self.load(sid)

    def describe(self) -> dict:
        """Plain-data description written into a run's manifest."""
        return {"dataset": self.name, "root": str(self.root), "split": self.split,
                "task": self.task, "overall": self.overall}


# ---------------------------------------------------------------- file helpers

def load_rgb(path: Path, sample_id: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an image file; SampleError if missing or undecodable."""
    from PIL import Image

    if not path.is_file():
        raise SampleError(sample_id, f"image file {str(path)!r} is missing")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several types for corrupt or truncated files
        raise SampleError(sample_id, f"cannot decode image {str(path)!r} "
                                     f"({type(exc).__name__}: {exc})") from None


def load_json(path: Path) -> Any:
    """Parse a JSON file; `DatasetFileError` (a ValueError) naming it if it is truncated or not JSON."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFileError(path, f"is not valid JSON ({exc}); the file is truncated or corrupt, "
                                     f"download or convert it again") from None


def load_pickle(path: Path) -> Any:
    """Load an annotation pickle (refer's ``refs(unc).p`` were written by Python 2);
    `DatasetFileError` naming it if it is truncated or not a pickle."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        try:
            return pickle.loads(data)
        except UnicodeDecodeError:
            return pickle.loads(data, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError) as exc:
        raise DatasetFileError(path, f"cannot be unpickled ({type(exc).__name__}: {exc}); the file "
                                     f"is truncated or corrupt, download it again") from None


def decode_rle(rle: dict, sample_id: str, what: str) -> np.ndarray:
    """(H, W) bool from a COCO RLE (compressed string or uncompressed list counts)."""
    from pycocotools import mask as mask_utils

    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise SampleError(sample_id, f"{what} is not a COCO RLE dict with 'size' and 'counts'")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    try:
        if isinstance(counts, list):
            obj = mask_utils.frPyObjects(rle, h, w)
        else:
            obj = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        with warnings.catch_warnings():  # pycocotools' __array__ copy= DeprecationWarning (numpy 2)
            warnings.simplefilter("ignore", DeprecationWarning)
            m = mask_utils.decode(obj)
    except Exception as exc:
        raise SampleError(sample_id, f"{what}: cannot decode RLE ({exc})") from None
    return m.astype(bool) if m.ndim == 2 else m.any(axis=2)


def coco_segmentation_mask(seg, height: int, width: int, sample_id: str) -> np.ndarray:
    """(H, W) bool from a COCO annotation ``segmentation`` (polygons or RLE), via pycocotools."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        polys = [p for p in seg if len(p) >= 6]
        if not polys:
            raise SampleError(sample_id, "annotation has no polygon with at least 3 points")
        rles = mask_utils.frPyObjects(polys, height, width)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    if isinstance(seg, dict):
        m = decode_rle(seg, sample_id, "annotation segmentation")
        if m.shape != (height, width):
            raise SampleError(sample_id, f"annotation RLE is {m.shape[0]}x{m.shape[1]} but the "
                                         f"image is {height}x{width}")
        return m
    raise SampleError(sample_id, f"unsupported segmentation type {type(seg).__name__}")


def first_existing(paths: Sequence[Path]) -> Path | None:
    for p in paths:
        if p.exists():
            return p
    return None


# ---------------------------------------------------------------- synthetic benchmark

class SyntheticReader(DatasetReader):
    """The procedurally generated benchmark (`evtp.data.synthetic`) behind the reader interface.

    ``root`` is not read (nothing is read from disk; `evtp eval` refuses a ``--root`` for it). Options: ``n`` (samples, default 200),
    ``seed_offset`` (default 0).
    """

    splits = ("train", "val", "test")

    def __init__(self, root, split, *, n: int | str = 200, seed_offset: int | str = 0):
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r} for dataset {self.name!r}; valid splits: "
                             f"{', '.join(self.splits)}")
        self.root, self.split = Path(root or "."), split
        self.n, self.seed_offset = int_option("n", n, 1), int_option("seed_offset", seed_offset, 0)
        self._synthetic = importlib.import_module("evtp.data.synthetic")

    def ids(self) -> list[str]:
        return [f"{self.split}-{self.task}-{i + self.seed_offset}" for i in range(self.n)]

    def load(self, sample_id: str) -> Sample:
        prefix = f"{self.split}-{self.task}-"
        if not sample_id.startswith(prefix):
            raise SampleError(sample_id, f"not an id of this split (expected {prefix}<index>)")
        index = int(sample_id[len(prefix):]) - self.seed_offset
        return self._synthetic.make_sample(self.split, index, self.task, seed_offset=self.seed_offset)


class SyntheticImage(SyntheticReader):
    name, task = "synthetic-image", "image"


class SyntheticVideo(SyntheticReader):
    name, task = "synthetic-video", "video"


# ---------------------------------------------------------------- registry

# name -> "module:ReaderClass" (imported on use)
DATASETS: dict[str, str] = {
    "refcoco": "evtp.data.refcoco:RefCOCO",
    "refcoco+": "evtp.data.refcoco:RefCOCOPlus",
    "refcocog": "evtp.data.refcoco:RefCOCOg",
    "reasonseg": "evtp.data.reasonseg:ReasonSeg",
    "mevis": "evtp.data.refvos:MeViS",
    "ref-youtube-vos": "evtp.data.refvos:RefYouTubeVOS",
    "revos": "evtp.data.refvos:ReVOS",
    "ref-davis": "evtp.data.refvos:RefDAVIS",
    "synthetic-image": "evtp.data.synthetic_readers:SyntheticImage",
    "synthetic-video": "evtp.data.synthetic_readers:SyntheticVideo",
}


def dataset_class(name: str) -> type[DatasetReader]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    module, cls = DATASETS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def open_dataset(name: str, root: str | Path, split: str, **options: Any) -> DatasetReader:
    """Open benchmark ``name`` at ``root`` (a local folder; nothing is downloaded)."""
    return dataset_class(name)(root, split, **options)
