"""Time-scale invariance: a log with every timestamp t -> t * c + shift gives the same examples,
the same normalized inputs to both towers, and the same trained model, for c in 0.01, 1, 1000.

The tiny world's timestamps are first rounded to multiples of 100 s, so that every stretch is
exact in integer seconds and no two events merge or swap.
"""

import numpy as np
import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.data.timescale import rescale_time
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.ranker import RankerConfig
from ytdnn.ranking import Ranker
from ytdnn.samples.candidate import CandidateExamples, ExampleConfig
from ytdnn.samples.streams import Featurizer
from ytdnn.train.config import TrainConfig

STRETCHES = [(0.01, 12_345), (1.0, 0), (1000.0, -5_000_000)]


@pytest.fixture(scope="module")
def base():
    d = generate(WorldConfig.preset("tiny", seed=3)).dataset
    return rescale_time(rescale_time(d, 0.01), 100.0)


@pytest.fixture(scope="module")
def trained(base):
    out = {}
    for factor, shift in STRETCHES:
        d = rescale_time(base, factor, shift)
        gen = CandidateGenerator(
            CandidateConfig(embedding_dim=8, output_dim=8, depth=1, num_negatives=None),
            ExampleConfig(max_watch_history=10, max_examples_per_user=None),
            TrainConfig(lr=3e-3, max_epochs=1, progress=False, num_threads=1, seed=0),
        ).fit(d.watches, d.searches, d.users, items=d.items)
        ranker = Ranker(RankerConfig(tower="16", max_embedding_dim=4),
                        TrainConfig(max_epochs=1, batch_size=256, progress=False, num_threads=1)).fit(
            gen, d.impressions, users=d.users, items=d.items)
        out[factor] = (d, gen, ranker)
    return out


def test_rescale_time_is_exact_on_multiples(base):
    for factor, shift in STRETCHES:
        d = rescale_time(base, factor, shift)
        t = np.asarray(d.watches.column("timestamp"), np.float64)
        np.testing.assert_array_equal(t, np.asarray(base.watches.column("timestamp"), np.float64) * factor + shift)
    with pytest.raises(ValueError, match="positive"):
        rescale_time(base, 0.0)


def test_same_examples_and_same_normalized_example_age(base):
    reference = None
    for factor, shift in STRETCHES:
        d = rescale_time(base, factor, shift)
        f = Featurizer().fit(d.watches, d.searches, d.users)
        ex = CandidateExamples(f.streams(d.watches, d.searches, d.users), ExampleConfig(), f)
        got = (ex.label_positions, ex.history_end, ex.token_end, ex.example_age, f.serving_age)
        assert 0.0 <= ex.example_age.min() and ex.example_age.max() < 1.0
        if reference is None:
            reference = got
            continue
        for a, b in zip(got[:3], reference[:3], strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(got[3], reference[3], atol=1e-6)
        assert got[4] == pytest.approx(reference[4], abs=1e-6)


def test_same_ranker_inputs_and_same_trained_generator(trained):
    (d0, g0, r0), *others = trained.values()
    raw0, bin0 = r0.raw_features(g0, d0.impressions)
    inputs0 = r0.featurizer_.normalize(raw0, bin0)
    for d, gen, ranker in others:
        raw, binary = ranker.raw_features(gen, d.impressions)
        np.testing.assert_allclose(ranker.featurizer_.normalize(raw, binary), inputs0, atol=1e-5)
        for (name, p), q in zip(gen.model_.state_dict().items(), g0.model_.state_dict().values(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-4, msg=name)
    lists = [gen.retrieve([int(u) for u in d.watches.column("user_id").to_numpy()[:20]], k=10)[0]
             for d, gen, _ in trained.values()]
    for other in lists[1:]:
        assert [a.tolist() for a in other] == [a.tolist() for a in lists[0]]
