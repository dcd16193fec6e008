"""Fixtures of the ranking tests: the clickbait world (clickbait.py) and a generator trained on it;
the tiny synthetic world with a one-epoch generator (``tiny_world``, one per test module)."""

import pytest
import torch
from clickbait import clickbait_world

from ytdnn.candidates import CandidateGenerator
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.models.candidate import CandidateConfig
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.train.config import TrainConfig


@pytest.fixture(scope="session")
def world():
    return clickbait_world()


@pytest.fixture(scope="session")
def generator(world):
    torch.set_num_threads(1)
    gen = CandidateGenerator(
        CandidateConfig(embedding_dim=8, output_dim=8, depth=0, num_negatives=None),
        ExampleConfig(max_watch_history=10, max_examples_per_user=None),
        TrainConfig(lr=1e-2, batch_size=64, max_epochs=2, progress=False, num_threads=1),
    )
    return gen.fit(world["watches"], users=world["users"], items=world["items"])


@pytest.fixture(scope="module")
def tiny_world():
    """(the tiny world's dataset, a generator fit on it for one epoch), built once per module."""
    torch.set_num_threads(1)
    d = generate(WorldConfig.preset("tiny")).dataset
    gen = CandidateGenerator(
        CandidateConfig(embedding_dim=16, output_dim=16, depth=0, num_negatives=None),
        ExampleConfig(max_watch_history=20),
        TrainConfig(lr=3e-3, max_epochs=1, progress=False, num_threads=1),
    ).fit(d.watches, d.searches, d.users, items=d.items)
    return d, gen
