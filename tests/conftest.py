"""Fixtures shared across test packages."""

import pytest

from ytdnn.cli import main


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The tiny synthetic world as canonical Parquet, written once by `ytdnn data synth`."""
    out = tmp_path_factory.mktemp("data")
    assert main(["data", "synth", "--preset", "tiny", "--out", str(out)]) == 0
    return out
