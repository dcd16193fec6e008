"""One Spark local[2] session for every Spark test (a start costs ~30 s), started only when a test
asks for it; how long the start took is printed at the end of the run (issue 18)."""

import time

import pytest

_SESSION_START: dict[str, float] = {}


@pytest.fixture(scope="session")
def spark():
    from ytdnn.scale.spark import spark_session

    start = time.perf_counter()
    session = spark_session("local[2]")
    _SESSION_START["local[2]"] = time.perf_counter() - start
    yield session
    session.stop()


def pytest_terminal_summary(terminalreporter):
    for master, seconds in _SESSION_START.items():
        terminalreporter.write_line(f"Spark {master} session start: {seconds:.1f} s")


@pytest.fixture(scope="session")
def two_stage_model(tmp_path_factory, data_dir):
    """A two-stage model directory trained for a few seconds on the tiny world."""
    from ytdnn.configuration import TwoStageConfig
    from ytdnn.data.schema import Dataset
    from ytdnn.training import train_all

    small = {"candidates.embedding_dim": 16, "candidates.output_dim": 16, "candidates.depth": 0,
             "train.max_epochs": 2, "train.patience": None, "train.progress": False, "train.num_threads": 1,
             "ranker.tower": "none", "ranker_train.max_epochs": 1, "ranker_train.progress": False}
    out = tmp_path_factory.mktemp("model")
    train_all(Dataset.load(data_dir), out, TwoStageConfig().with_settings(small))
    return out
