"""The ranker learns the planted clickbait answer only when trained with watch-time weights."""

import numpy as np
import pytest
import torch
from clickbait import BAIT, GOOD, clickbait_world

from ytdnn.eval.metrics import weighted_per_user_loss
from ytdnn.models.ranker import TOWER_PRESETS, RankerConfig, RankerModel, RankerSizes, tower_widths
from ytdnn.ranking import Ranker
from ytdnn.train.config import TrainConfig


def train_ranker(world, generator, **cfg):
    settings = {"tower": "16", "max_embedding_dim": 8, **cfg}
    return Ranker(
        RankerConfig(**settings),
        TrainConfig(lr=2e-2, batch_size=256, max_epochs=8, progress=False, num_threads=1),
    ).fit(generator, world["impressions"], users=world["users"], items=world["items"])


@pytest.fixture(scope="module")
def held_out():
    return clickbait_world(seed=1)


@pytest.fixture(scope="module")
def weighted(world, generator):
    return train_ranker(world, generator)


@pytest.fixture(scope="module")
def unweighted(world, generator):
    return train_ranker(world, generator, weighted=False)


def _odds_by_kind(ranker, generator, held_out):
    logits = ranker.score_impressions(generator, held_out["impressions"], held_out["watches"],
                                      users=held_out["users"])
    items = held_out["impressions"]["item_id"].to_numpy()
    odds = np.exp(logits)
    return logits, odds[np.isin(items, GOOD)].mean(), odds[np.isin(items, BAIT)].mean()


def test_weighted_training_serves_expected_watch_time(weighted, generator, held_out):
    _, good, bait = _odds_by_kind(weighted, generator, held_out)
    # learned odds sum(T) / (N - k): 25 for good items, 4 for bait (clickbait.py's docstring)
    assert 15 < good < 40 and 2 < bait < 7
    assert good / bait > 3


def test_unweighted_training_prefers_clickbait(unweighted, generator, held_out):
    _, good, bait = _odds_by_kind(unweighted, generator, held_out)
    # plain click odds: 0.2 / 0.8 = 0.25 for good items, 0.5 / 0.5 = 1 for bait
    assert bait > 2 * good
    assert 0.1 < good < 0.5 and 0.6 < bait < 1.6


def test_weighted_training_has_the_lower_weighted_per_user_loss(weighted, unweighted, generator, held_out):
    imp = held_out["impressions"]
    args = (imp["clicked"].to_numpy(zero_copy_only=False), imp["watch_time"].to_numpy(), imp["page_id"].to_numpy())
    loss_weighted = weighted_per_user_loss(_odds_by_kind(weighted, generator, held_out)[0], *args)
    loss_unweighted = weighted_per_user_loss(_odds_by_kind(unweighted, generator, held_out)[0], *args)
    # weighted: good above bait, so only good-vs-good pairs (coin flips) can be wrong
    assert loss_weighted < 0.6 * loss_unweighted


def test_ranker_directory_round_trip_gives_identical_scores(weighted, generator, held_out, tmp_path):
    weighted.save(tmp_path / "ranker")
    again = Ranker.load(tmp_path / "ranker")
    imp, watches = held_out["impressions"], held_out["watches"]
    np.testing.assert_array_equal(
        weighted.score_impressions(generator, imp, watches, users=held_out["users"]),
        again.score_impressions(generator, imp, watches, users=held_out["users"]),
    )
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))


def test_loading_a_non_ranker_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a ytdnn ranker directory"):
        Ranker.load(tmp_path)


@pytest.mark.parametrize("tower", TOWER_PRESETS)
def test_table_one_presets_build_towers_of_their_widths(tower):
    model = RankerModel(RankerConfig(tower=tower), RankerSizes(num_items=5, num_continuous=3))
    linears = [m for m in model.tower if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [*tower_widths(tower), 1]
    assert tower_widths("none") == () and tower_widths("1024-512-256") == (1024, 512, 256)


@pytest.mark.parametrize("tower", ["", "512-", "abc", "0", "512--256"])
def test_bad_tower_names_are_rejected(tower):
    with pytest.raises(ValueError, match="tower must be"):
        RankerConfig(tower=tower)


def test_oov_item_has_the_zero_embedding_and_powers_switch_the_input_width():
    sizes = RankerSizes(num_items=5, num_continuous=3)
    model = RankerModel(RankerConfig(tower="none"), sizes)
    assert torch.count_nonzero(model.item_table.weight[0]) == 0
    assert RankerConfig(use_powers=False).replace(tower="256").use_powers is False
