"""`evtp bench vllm` refuses bad arguments, and runs only where vLLM is installed (.venv-vllm)."""
import importlib.util

import pytest

from evtp.cli import main


@pytest.mark.parametrize("argv, words", [
    (["--keep", "0"], "every ratio must lie in (0, 1]"),
    (["--keep", "half"], "expected comma-separated numbers"),
    (["--repeats", "0"], "must be >= 1"),
    (["--method", "attention"], "needs per-token attention scores"),
])
def test_bad_arguments_exit_2(capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        main(["bench", "vllm", *argv])
    assert info.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_it_says_where_to_run(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "vllm", "--keep", "0.5"])
    assert info.value.code == 2
    assert "run it in .venv-vllm" in capsys.readouterr().err
