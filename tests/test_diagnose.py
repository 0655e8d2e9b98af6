"""`evtp diagnose reference`'s measures that need no trained weights (the command itself is
tested on the shipped weights in test_reference_weights.py)."""
import torch

from evtp.data.synthetic import make_sample, object_cover
from evtp.models.reference.diagnose import peak_kind


def test_peak_kind_tells_target_other_member_non_member_and_background():
    s = next(s for s in (make_sample("val", i, "image", with_labels=True) for i in range(60))
             if len(s.meta["members"]) > 1 and len(s.meta["members"]) < len(s.meta["objects"]))
    cover = torch.from_numpy(object_cover(s.meta["labels"][:1], len(s.meta["objects"]), 16))[0]  # (O, G*G)
    t = s.meta["target"]
    other_member = next(m for m in s.meta["members"] if m != t)
    non_member = next(o for o in range(len(s.meta["objects"])) if o not in s.meta["members"])

    def cell_of(o):  # a cell that object o covers most, >= 25 %
        return int(cover[o].argmax())

    assert peak_kind(s.meta, 16, cell_of(t)) == "hit"
    assert peak_kind(s.meta, 16, cell_of(other_member)) == "peak_member"
    assert peak_kind(s.meta, 16, cell_of(non_member)) == "peak_other"
    empty = int((cover.max(0).values == 0).nonzero()[0])
    assert peak_kind(s.meta, 16, empty) == "peak_background"
