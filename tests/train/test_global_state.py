"""Training leaves the process as it found it (issue 14, item 9): torch's, numpy's and Python's
global generators and torch's thread count are the same after fit as before, while the same seed
still gives the same weights."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.ranker import RankerConfig
from ytdnn.ranking import Ranker
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.train import TrainConfig, fit


def tiny_log() -> dict[str, pa.Table]:
    """12 users, 8 items, timestamped watches and one impression page per user."""
    users = np.repeat(np.arange(12), 6)
    items = (users + np.tile(np.arange(6), 12)) % 8
    times = 1_000 + np.arange(len(users)) * 10
    watches = pa.table({
        "user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
        "timestamp": pa.array(times, pa.int64()),
        "watch_time": pa.array(np.full(len(users), 30.0))})
    page_users = np.repeat(np.arange(12), 4)
    page_items = (page_users * 3 + np.tile(np.arange(4), 12)) % 8
    impressions = pa.table({
        "user_id": pa.array(page_users, pa.int64()), "item_id": pa.array(page_items, pa.int64()),
        "timestamp": pa.array(np.full(len(page_users), 2_000), pa.int64()),
        "clicked": pa.array(np.tile([True, False, False, True], 12)),
        "watch_time": pa.array(np.tile([40.0, 0.0, 0.0, 5.0], 12)),
        "page_id": pa.array(page_users, pa.int64())})
    return {"watches": watches, "impressions": impressions}


def fit_generator(log: dict[str, pa.Table], seed: int = 0) -> CandidateGenerator:
    # sampled negatives: its training draws from torch's global generator
    return CandidateGenerator(
        CandidateConfig(embedding_dim=8, output_dim=8, depth=1, num_negatives=3),
        ExampleConfig(max_watch_history=4),
        TrainConfig(lr=0.01, max_epochs=1, batch_size=16, progress=False, num_threads=1, seed=seed),
    ).fit(log["watches"])


def fit_ranker(gen: CandidateGenerator, log: dict[str, pa.Table]) -> Ranker:
    # dropout: its training draws from torch's global generator
    return Ranker(RankerConfig(tower="8", max_embedding_dim=4, dropout=0.2),
                  TrainConfig(max_epochs=2, batch_size=16, progress=False, num_threads=1)).fit(
        gen, log["impressions"])


def seed_globals() -> None:
    torch.manual_seed(123)
    np.random.seed(456)
    random.seed(789)


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.random(3).tolist(), [random.random() for _ in range(3)]


@pytest.fixture
def log() -> dict[str, pa.Table]:
    return tiny_log()


@pytest.fixture
def threads():
    """torch's thread count set to 2 for the test (fits ask for 1), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_fitting_both_stages_leaves_global_rngs_and_threads_as_they_were(log, threads):
    seed_globals()
    expected = draws()  # what an unperturbed process draws next
    seed_globals()
    gen = fit_generator(log)
    fit_ranker(gen, log)
    assert draws() == expected
    assert torch.get_num_threads() == threads


def test_the_training_loop_alone_leaves_global_rngs_and_threads_as_they_were(threads):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))

    def batches(epoch: int, generator: torch.Generator):
        return [x[rows] for rows in torch.randperm(32, generator=generator).split(8)]

    def loss(model, batch):
        return model(batch).pow(2).mean()

    seed_globals()
    expected = draws()
    seed_globals()
    fit(model, TrainConfig(max_epochs=2, progress=False, num_threads=1), batches, loss_fn=loss)
    assert draws() == expected
    assert torch.get_num_threads() == threads


def test_same_seed_gives_identical_weights_whatever_the_global_state(log):
    torch.manual_seed(1)
    first = fit_generator(log, seed=5).model_.state_dict()
    torch.manual_seed(2)  # another global state: the fit must not depend on it
    np.random.seed(2)
    second = fit_generator(log, seed=5).model_.state_dict()
    other = fit_generator(log, seed=6).model_.state_dict()
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    # the seed matters
    assert not all(torch.equal(tensor, other[name]) for name, tensor in first.items())
