"""Test-suite settings: hypothesis runs derandomised so that CI is reproducible (the examples are
still generated, from a fixed seed). `pytest --hypothesis-profile=explore` searches afresh."""
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile("ci")


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Tiny test models run one intra-op thread: on a 2-core machine shared with other jobs, two
    OpenMP threads wait on each other and a tiny step runs up to 100x slower. Tests that set the
    thread count (``evtp train --threads``) get it reset afterwards."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


def pytest_configure(config):
    """The test-only models (``llava-sam-tiny``, ``bench transformers --model tiny``) are registered
    by test support, never by the library (`evtp.testing.register_test_models`)."""
    from evtp.testing import register_test_models

    register_test_models()


@pytest.fixture(scope="module")
def hf_hub_offline():
    """HF_HUB_OFFLINE=1 for a module's tests (checkpoints load from local folders only), restored after."""
    import os

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
    if old is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = old
