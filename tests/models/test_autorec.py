"""The rating autoencoder (I-AutoRec) and its place as a rating feature of the ranker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ytdnn.models.autorec import RatingAutoencoder
from ytdnn.ranking import Ranker
from ytdnn.samples.ratings import ItemRatings, RatingConfig, RatingLog
from ytdnn.train.config import TrainConfig


def test_item_ratings_are_dense_vectors_of_the_log_by_item():
    # user rows 1..3, items 1..3 of 4 ids; the pair (2, 1) twice: its mean rating 4
    log = RatingLog.fit(np.array([1, 2, 2, 3, 1]), np.array([1, 1, 1, 3, 3]), np.array([5.0, 3.0, 5.0, 1.0, 2.0]), 4)
    ratings = ItemRatings(log, num_users=4)
    assert (ratings.num_items, ratings.num_ratings) == (4, 4)
    batch = ratings.batch(np.array([3, 0, 1]))
    assert batch.ratings.tolist() == [[0, 2, 0, 1], [0, 0, 0, 0], [0, 5, 4, 0]]
    assert batch.observed.tolist() == [[False, True, False, True], [False] * 4, [False, True, True, False]]
    seen = [b.ratings.shape[0] for b in ratings.batches(1, np.random.default_rng(0))]
    assert seen == [1, 1]  # the two rated items only, one a batch


def test_the_loss_counts_observed_ratings_and_the_per_rating_share_of_lambda():
    model = RatingAutoencoder(num_users=3, units=2, l2=8.0, num_ratings=4)
    ratings = torch.tensor([[5.0, 0.0, 1.0]])
    observed = torch.tensor([[True, False, True]])
    from ytdnn.samples.ratings import ItemRatingBatch

    out = model.decoder(torch.sigmoid(model.encoder(ratings)))
    decay = model.encoder.weight.square().sum() + model.decoder.weight.square().sum()
    expected = ((out[0, [0, 2]] - torch.tensor([5.0, 1.0])) ** 2).mean() + 8.0 / 8 * decay
    assert torch.allclose(model.loss(ItemRatingBatch(ratings, observed)), expected)
    codes = model.codes(ratings)
    assert torch.allclose(model.predict(codes.expand(3, 2), torch.arange(3)), out[0])


def _block_log(seed: int = 0, noise: bool = False):
    """40 users x 30 items, each user rating 18 items: 5 where user and item parity agree, else 1
    (noise: ratings drawn at random instead, nothing to learn)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(1, 41), 18)
    items = np.concatenate([rng.choice(np.arange(1, 31), 18, replace=False) for _ in range(40)])
    ratings = rng.integers(1, 6, len(users)).astype(float) if noise else np.where(users % 2 == items % 2, 5.0, 1.0)
    return users, items, ratings


def _ranker(units: int = 16, epochs: int = 300, l2: float = 1.0, lr: float = 1e-2) -> Ranker:
    ranker = Ranker(train=TrainConfig(num_threads=1, progress=False),
                    ratings=RatingConfig(autorec_units=units, autorec_epochs=epochs, autorec_l2=l2, autorec_lr=lr))
    ranker.rating_fill_ = 3.0
    return ranker


def test_the_autoencoder_learns_a_planted_pattern_and_predicts_unseen_pairs():
    users, items, ratings = _block_log()
    held = np.random.default_rng(1).random(len(users)) < 0.2
    ranker = _ranker()
    ranker.rating_log_ = log = RatingLog.fit(users[~held], items[~held], ratings[~held], 31)
    model = ranker._fit_autorec(ItemRatings(log, 41))
    predicted = ranker._autorec_ratings(model, ItemRatings(log, 41), users[held], items[held])
    rmse = np.sqrt(np.mean((predicted - ratings[held]) ** 2))
    assert rmse < 0.6, rmse  # the mean rating is 2 stars off on every pair
    unknown = ranker._autorec_ratings(model, ItemRatings(log, 41), np.array([0]), np.array([3]))
    assert unknown.tolist() == [3.0]  # an unknown user: the fill


def test_the_training_column_is_out_of_fold():
    """On random ratings an autoencoder that saw a rating reproduces it; out of fold it cannot."""
    users, items, ratings = _block_log(noise=True)
    ranker = _ranker(units=64, epochs=800, l2=0.01, lr=3e-2)  # free to memorize
    ranker.rating_log_ = RatingLog.fit(users, items, ratings, 31)

    class Generator:  # what _autorec_out_of_fold reads of a generator
        class streams_:
            num_users = 41

        class featurizer_:
            num_items = 31

    folds = np.arange(len(users)) % 5
    rows = np.arange(len(users))
    column = ranker._autorec_out_of_fold(Generator, users, items, ratings, folds, rows, items)
    seen = ranker._autorec_ratings(ranker.autorec_, ItemRatings(ranker.rating_log_, 41), users, items)
    error = lambda p: np.sqrt(np.mean((p - ratings) ** 2))
    assert error(seen) < 0.6, error(seen)  # memorized
    assert error(column) > 1.2, error(column)  # out of fold: nothing to reproduce


def test_a_bad_autoencoder_setting_is_a_config_error():
    with pytest.raises(ValueError, match="autorec_units >= 0"):
        RatingConfig(autorec_units=-1).validate()
    with pytest.raises(ValueError, match="autorec_lr > 0"):
        RatingConfig(autorec_lr=0.0).validate()
