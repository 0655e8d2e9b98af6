"""The cells `evtp bench reference` / `evtp bench compare` tables share (evtp.bench.report)."""
import pytest

from evtp.bench.report import keep_is_method_free, tokens_per_object_cell
from evtp.settings import SettingsError


@pytest.mark.parametrize("text, free", [("0", True), ("1.0", True), ("0.2", False), ("0.05", False),
                                        ("64", False), ("1", False)])
def test_keep_text_is_method_free_only_for_no_tokens_and_all_tokens(text, free):
    # "1" is a count of one token, not the full run
    assert keep_is_method_free(text) is free


def test_keep_text_that_is_no_keep_is_refused():
    with pytest.raises(SettingsError, match="half"):
        keep_is_method_free("half")


def test_tokens_per_object_cell_has_two_decimals_or_a_dash_without_object_counts():
    assert tokens_per_object_cell({"tokens_per_object": 9.6449}) == "9.64"
    assert tokens_per_object_cell({"tokens_per_object": 0.0}) == "0.00"
    assert tokens_per_object_cell({"tokens_per_object": None}) == "-"
