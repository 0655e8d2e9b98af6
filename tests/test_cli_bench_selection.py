"""The selection benchmark and the demo run end to end on tiny sizes and write what they promise."""
import json

import pytest

import evtp
from evtp.cli import main as cli


def test_bench_selection_tiny(tmp_path, capsys):
    out = tmp_path / "sel.json"
    assert cli(["bench", "selection", "--n", "256", "--d", "32", "--repeats", "1",
                "--methods", "kcenter,evtp,random", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["n"] == 256 and row["k"] == 51
    assert {"floor", "divprune", "kcenter", "evtp", "random", "kcenter[fp16]", "evtp[proj256]"} <= set(row["ms"])
    assert row["kcenter_same_as_divprune"] is True
    assert row["covering_radius"]["kcenter"] > 0
    text = capsys.readouterr().out
    assert "DivPrune procedure" in text and (tmp_path / "sel.md").exists()


def test_bench_selection_rejects_unknown_method():
    with pytest.raises(SystemExit):
        cli(["bench", "selection", "--methods", "nope"])


def test_cli_unknown_command(capsys):
    assert cli(["frobnicate"]) == 2
    assert "bench selection" in capsys.readouterr().err


def test_demo_overlays(tmp_path):
    from evtp.demo import selection_overlays

    rows = selection_overlays(tmp_path, keep=0.1)
    assert {r["method"] for r in rows} == set(evtp.METHODS)
    assert all(r["kept"] == 26 for r in rows)
    assert (tmp_path / "overlays.png").stat().st_size > 0
    for name in evtp.METHODS:
        assert (tmp_path / f"overlay_{name}.png").exists()


def test_demo_reference_part_runs_on_a_saved_model(tmp_path):
    from evtp.demo import reference_demo
    from evtp.models.reference import ReferenceConfig, ReferenceIVS, save_model

    save_model(ReferenceIVS(ReferenceConfig()), tmp_path)
    table = reference_demo(0.2, 1, methods=("evtp", "random"), weights=str(tmp_path))
    assert set(table) == {"full@1.0", "evtp@0.2", "random@0.2"}
    assert table["full@1.0"]["tokens_kept"] == 256 and table["evtp@0.2"]["tokens_kept"] == 51
    assert all(0.0 <= r["ciou"] <= 1.0 for r in table.values())


def test_demo_reference_part_skips_without_weights(tmp_path):
    from evtp.demo import reference_demo

    assert reference_demo(0.2, 1, weights=str(tmp_path)) is None
