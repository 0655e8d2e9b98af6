"""Test-suite settings: hypothesis runs derandomised so that CI is reproducible (the examples are
still generated, from a fixed seed). `pytest --hypothesis-profile=explore` searches afresh."""
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile("ci")
