import pytest

from .helpers import llava_checkpoint


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory):
    return llava_checkpoint(tmp_path_factory.mktemp("llava"))
