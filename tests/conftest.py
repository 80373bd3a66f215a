import pytest

from schedlab.testing import synthetic_store as make_synthetic_store


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """A paper-shaped store (60 planned runs, one failed, one diverged), built once."""
    return make_synthetic_store(tmp_path_factory.mktemp("synthetic") / "synthetic.sqlite")


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """The tiny study (4 runs of 5 steps) trained once through the Python API: (study file,
    store)."""
    from pathlib import Path

    from schedlab.api import run_study

    study = Path(__file__).parent / "fixtures" / "tiny_study.toml"
    store = tmp_path_factory.mktemp("tiny") / "tiny.sqlite"
    outcome = run_study(study, store=store)
    assert outcome.outcomes["done"] == 4
    return study, store
