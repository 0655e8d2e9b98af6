"""The shipped reference weights: load offline and reproduce their recorded accuracy."""
import json
import socket

import pytest

from evtp.models import load_model
from evtp.models.reference import WEIGHTS_DIR, fixed_check


@pytest.fixture(scope="module")
def shipped():
    return load_model("reference")


def test_weights_are_small_and_described():
    w = WEIGHTS_DIR / "reference.safetensors"
    assert w.stat().st_size <= 30 * 2 ** 20
    info = json.loads((WEIGHTS_DIR / "reference.json").read_text())
    assert {"config", "meta"} <= set(info) and "check" in info["meta"]
    assert (WEIGHTS_DIR / "MODEL_CARD.md").read_text().strip()


def test_loading_needs_no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = load_model("reference")
    assert model.name == "reference"


def test_recorded_accuracy_reproduces(shipped):
    check = shipped.meta["check"]
    full = fixed_check(shipped, check["n_image"], check["n_video"], keep=1.0)
    assert full["image_ciou"] == pytest.approx(check["full"]["image_ciou"], abs=0.02)
    assert full["video_jf"] == pytest.approx(check["full"]["video_jf"], abs=0.02)


def test_no_visual_tokens_reproduces(shipped):
    """The keep-0 ablation on the fixed sample reproduces its recorded value (the model card
    discusses how far below full-token accuracy it is)."""
    check = shipped.meta["check"]
    none = fixed_check(shipped, check["n_image"], 0, keep=0)
    assert none["image_ciou"] == pytest.approx(check["none"]["image_ciou"], abs=0.02)
