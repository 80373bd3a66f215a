import pytest

from schedlab.testing import synthetic_store as make_synthetic_store


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """A paper-shaped store (60 planned runs, one failed, one diverged), built once."""
    return make_synthetic_store(tmp_path_factory.mktemp("synthetic") / "synthetic.sqlite")
