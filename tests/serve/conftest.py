"""Tiny two-stage models on the "tiny" synthetic world (seconds to train), shared by the serve tests."""

import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.ranker import RankerConfig
from ytdnn.pipeline import Recommender
from ytdnn.ranking import Ranker
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.train.config import TrainConfig


def train_tiny(seed: int = 0, ranker: bool = True) -> tuple:
    """(dataset, Recommender) on the tiny world of ``seed``."""
    d = generate(WorldConfig.preset("tiny", seed=seed)).dataset
    gen = CandidateGenerator(
        CandidateConfig(embedding_dim=16, output_dim=16, depth=0, num_negatives=None),
        ExampleConfig(max_watch_history=20),
        TrainConfig(lr=3e-3, max_epochs=1, progress=False, num_threads=1, seed=seed),
    ).fit(d.watches, d.searches, d.users, items=d.items)
    second = None
    if ranker:
        second = Ranker(RankerConfig(tower="32", max_embedding_dim=8),
                        TrainConfig(max_epochs=1, batch_size=512, progress=False, num_threads=1)).fit(
            gen, d.impressions, users=d.users, items=d.items)
    return d, Recommender(gen, second, num_candidates=60)


@pytest.fixture(scope="session")
def tiny_world_model(tmp_path_factory):
    """(dataset, model directory) of a two-stage model."""
    torch.set_num_threads(1)
    d, rec = train_tiny(seed=0)
    return d, rec.save(tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory):
    """A second model (another world, retrieval only): what a hot reload swaps in."""
    torch.set_num_threads(1)
    _, rec = train_tiny(seed=1, ranker=False)
    return rec.save(tmp_path_factory.mktemp("serve") / "other")
