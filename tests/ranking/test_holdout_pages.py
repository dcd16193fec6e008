"""Ranker pages of unordered logs (samples/holdout_pages.py): a seeded holdout of each user's
items, pages from a stacking generator and stacking sources that never saw it, served behind the
generator trained on everything."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn import training
from ytdnn.candidates import CandidateGenerator
from ytdnn.configuration import TwoStageConfig
from ytdnn.data.schema import IMPRESSIONS, DataError, Dataset, validate_table
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.models.candidate import CandidateConfig
from ytdnn.pipeline import Recommender
from ytdnn.ranking import Ranker
from ytdnn.retrieval.generator import GeneratorSource
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.holdout_pages import PAGE_TIME, holdout_pages, split_holdout
from ytdnn.samples.impressions import ImpressionConfig, stacking_generator
from ytdnn.train.config import TrainConfig
from ytdnn.training import fit_ranker, fit_sources

USERS = [3, 17, 42, 150]


def pairs(table: pa.Table) -> set[tuple[int, int]]:
    return set(zip(table["user_id"].to_pylist(), table["item_id"].to_pylist()))


def by_user(table: pa.Table) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for u, i in zip(table["user_id"].to_pylist(), table["item_id"].to_pylist()):
        out.setdefault(u, set()).add(i)
    return out


@pytest.fixture(scope="module")
def unordered():
    """The tiny world's watches without timestamps (an unordered log, as ml-1m's fold files),
    and a generator trained on all of them. A 5-watch bag: most histories are longer, so the
    generator's score depends on reading an unordered history whole."""
    torch.set_num_threads(1)
    d = generate(WorldConfig.preset("tiny")).dataset
    watches = d.watches.set_column(d.watches.column_names.index("timestamp"), "timestamp",
                                   pa.nulls(len(d.watches), pa.int64()))
    dataset = Dataset(watches, users=d.users, items=d.items)
    gen = CandidateGenerator(
        CandidateConfig(embedding_dim=16, output_dim=16, depth=0, num_negatives=None),
        ExampleConfig(max_watch_history=5),
        TrainConfig(lr=3e-3, max_epochs=1, progress=False, num_threads=1),
    ).fit(watches, users=d.users, items=d.items)
    assert not gen.featurizer_.ordered_
    return dataset, gen


@pytest.fixture(scope="module")
def stacked(unordered):
    dataset, gen = unordered
    kept, held = split_holdout(dataset.watches, 0.2, seed=0)
    stacking = stacking_generator(gen, dataset, kept)
    return kept, held, stacking


def settings(extra: dict) -> TwoStageConfig:
    quick = {"ranker_train.max_epochs": 1, "ranker_train.progress": False, "ranker_train.num_threads": 1,
             "tower": "8", "impressions.num_candidates": 20, "negatives_per_page": 5}
    return TwoStageConfig().with_settings({**quick, **extra})


def test_the_holdout_takes_a_share_of_each_users_distinct_items(unordered):
    watches = unordered[0].watches
    kept, held = split_holdout(watches, 0.2, seed=0)
    assert len(kept) + len(held) == len(watches) and not pairs(kept) & pairs(held)
    items, out = by_user(watches), by_user(held)
    for user, mine in items.items():
        expected = 0 if len(mine) == 1 else min(max(round(0.2 * len(mine)), 1), len(mine) - 1)
        assert len(out.get(user, ())) == expected  # at least one, never all
    assert by_user(kept).keys() == items.keys()  # every user keeps a history
    again = split_holdout(watches, 0.2, seed=0)
    assert again[0].equals(kept) and again[1].equals(held)
    assert not split_holdout(watches, 0.2, seed=1)[1].equals(held)


def test_no_stacking_source_sees_a_held_out_item(unordered, monkeypatch):
    dataset, gen = unordered
    seen = []
    for name, make in list(training.SOURCE_KINDS.items()):
        monkeypatch.setitem(training.SOURCE_KINDS, name,
                            lambda g, cfg, make=make: (seen.append((g.streams_, g.featurizer_)), make(g, cfg))[1])
    config = settings({"pipeline.sources": "ease:10,cooc:10", "cooc.neighbours": 7})
    pages, sources, _ = training._holdout_setup(gen, dataset, config)
    _, held = split_holdout(dataset.watches, config.impressions.holdout, config.impressions.seed)
    assert len(seen) == 2 and [s.name for s, _ in sources] == ["generator", "ease", "cooc"]
    assert sources[2][0].cfg.neighbours == 7  # stacked with the settings serving's source gets
    for streams, f in [(pages.streams_, pages.featurizer_), *seen]:
        assert streams is pages.streams_  # the sources learn the stacking generator's log
        users = f.users_.encode(held["user_id"])
        items = f.items_.encode(held["item_id"])
        trained = set(zip(streams.watch_users().tolist(), streams.watch_items.tolist()))
        assert not {(u, i) for u, i in zip(users.tolist(), items.tolist()) if i > 0} & trained


@pytest.mark.parametrize("spec", ["", "ease:10,cooc:10"])
def test_a_page_is_the_kept_historys_blend_and_clicks_its_held_out_items(unordered, stacked, spec):
    _, held, stacking = stacked
    kept_items, held_items = by_user(stacked[0]), by_user(held)
    watch_time = {}  # an item watched more than once: its first held-out row's watch time
    for key, seconds in zip(zip(held["user_id"].to_pylist(), held["item_id"].to_pylist()),
                            held["watch_time"].to_pylist()):
        watch_time.setdefault(key, seconds)
    others = fit_sources(stacking, settings({"pipeline.sources": spec}))
    sources = [(GeneratorSource(stacking), 20), *others] if others else None
    cfg = ImpressionConfig(num_candidates=20, seed=3)  # every negative kept: whole pages
    table = holdout_pages(stacking, held, cfg, sources)
    validate_table(table, IMPRESSIONS)
    assert set(table["timestamp"].to_pylist()) == {PAGE_TIME}
    pages = {}
    for row in table.to_pylist():
        pages.setdefault(row["page_id"], []).append(row)
    assert len(pages) == len(held_items)  # one page per user with held-out items
    for rows in pages.values():
        user = rows[0]["user_id"]
        assert all(r["user_id"] == user for r in rows)
        shown = [r["item_id"] for r in rows]
        assert len(set(shown)) == len(shown) <= 20 + 20 * len(others)
        assert not set(shown) & kept_items[user]  # the history is never shown again
        assert {r["item_id"] for r in rows if r["clicked"]} == set(shown) & held_items[user]
        for r in rows:
            assert r["watch_time"] == (watch_time[user, r["item_id"]] if r["clicked"] else 0.0)
        if not others:  # the generator's own top 20 for the kept history, as it serves it
            top, _ = stacking.retrieve([user], k=20)
            assert shown == top[0].tolist()
    assert table["clicked"].to_numpy(zero_copy_only=False).any()
    assert holdout_pages(stacking, held, cfg, sources).equals(table)  # the same seed, the same pages


def test_negatives_are_subsampled_and_positives_kept(stacked):
    _, held, stacking = stacked
    full = holdout_pages(stacking, held, ImpressionConfig(num_candidates=20))
    sampled = holdout_pages(stacking, held, ImpressionConfig(num_candidates=20, negatives_per_page=3))
    clicked = sampled["clicked"].to_numpy(zero_copy_only=False)
    assert np.all(np.bincount(sampled["page_id"].to_numpy()[~clicked]) <= 3)
    assert clicked.sum() == full["clicked"].to_numpy(zero_copy_only=False).sum()


def test_unordered_impressions_before_the_history_are_refused(unordered, stacked):
    dataset, gen = unordered
    ranker = fit_ranker(gen, dataset, settings({}))
    _, held, stacking = stacked
    table = holdout_pages(stacking, held, ImpressionConfig(num_candidates=20))
    at_zero = table.set_column(table.column_names.index("timestamp"), "timestamp",
                               pa.array(np.zeros(len(table), np.int64)))
    with pytest.raises(DataError, match="time >= 1"):
        ranker.score_impressions(stacking, at_zero)


def test_an_unordered_log_learns_from_built_pages_only(unordered):
    dataset, gen = unordered
    with pytest.raises(DataError, match="built pages only"):
        fit_ranker(gen, dataset, settings({"impressions.source": "logged"}))
    with pytest.raises(ValueError, match="holdout"):
        ImpressionConfig(holdout=1.0)


@pytest.mark.parametrize("spec", ["", "ease:10,cooc:10"])
def test_fit_ranker_on_an_unordered_log_serves_behind_the_full_generator(unordered, spec):
    dataset, gen = unordered
    config = settings({"pipeline.sources": spec})
    ranker = fit_ranker(gen, dataset, config)
    assert ranker.featurizer_.source_names_ == (("generator", "ease", "cooc") if spec else ())
    rec = Recommender(gen, ranker, num_candidates=20, sources=fit_sources(gen, settings({"pipeline.sources": spec})))
    watched = by_user(dataset.watches)
    out = rec.recommend_batch(USERS, k=10)
    for user, r in zip(USERS, out):
        assert len(r.item_ids) == 10 and list(r.stages) == ["ranker"] * 10
        assert not set(r.item_ids.tolist()) & watched[user]
        assert np.all(np.isfinite(r.scores)) and np.all(r.scores > 0) and np.all(np.diff(r.scores) <= 0)
    single = rec.recommend(USERS[1], k=10)
    np.testing.assert_array_equal(single.item_ids, out[1].item_ids)


def test_a_page_scores_as_served(unordered):
    """The ranker's training features of a page are those serving computes for the same user and
    candidates at serving's default time (window_end_ + 1, which is the pages' time 1 for an
    unordered log): served behind the stacking generator itself, each served item is on the
    user's page and its expected watch time is exp of its training logit."""
    dataset, gen = unordered
    config = settings({"pipeline.sources": "ease:10"})
    pages, sources, draw = training._holdout_setup(gen, dataset, config)
    assert gen.featurizer_.window_end_ + 1 == pages.featurizer_.window_end_ + 1 == PAGE_TIME
    table = draw(config.impressions.replace(negatives_per_page=None))  # whole pages
    ranker = fit_ranker(gen, dataset, config)  # trained on the same holdout (the same seed)
    logits = ranker.score_impressions(pages, table, sources=sources)
    page = {key: n for n, key in enumerate(zip(table["user_id"].to_pylist(), table["item_id"].to_pylist()))}
    rec = Recommender(pages, ranker, num_candidates=20, sources=sources[1:])
    users = sorted({u for u, _ in page})[:12]
    for user, r in zip(users, rec.recommend_batch(users, k=20)):  # default now
        rows = [page[user, i] for i in r.item_ids.tolist()]  # KeyError: served off the page
        np.testing.assert_allclose(r.scores, np.exp(logits[rows]), rtol=1e-4)


def within_page_auc(logits: np.ndarray, labels: np.ndarray, pages: np.ndarray) -> float:
    """The mean over pages with both kinds of the share of (clicked, unclicked) pairs in order."""
    aucs = []
    for page in np.unique(pages):
        mine = pages == page
        pos, neg = logits[mine & (labels > 0)], logits[mine & (labels == 0)]
        if len(pos) and len(neg):
            aucs.append(float(np.mean(pos[:, None] > neg[None, :])))
    return float(np.mean(aucs))


def test_the_page_softmax_trains_on_whole_pages_and_learns_their_order(unordered):
    dataset, gen = unordered
    config = settings({"pipeline.sources": "ease:10", "ranker.loss": "page_softmax",
                       "ranker_train.max_epochs": 3})
    pages, sources, draw = training._holdout_setup(gen, dataset, config)
    table = draw(config.impressions.replace(negatives_per_page=None))  # whole pages
    ranker = fit_ranker(gen, dataset, config)  # on the same holdout, 5 negatives a page
    examples = ranker.impression_examples(pages, table, sources=sources)
    batches = list(examples.batches(64, np.random.default_rng(0), by_page=True))
    order = np.concatenate([b.pages.numpy() for b in batches])
    assert sorted(order.tolist()) == sorted(examples.pages.tolist())
    runs = 1 + np.count_nonzero(np.diff(order))
    assert runs == len(np.unique(examples.pages))  # each page's rows together
    assert max(len(b) for b in batches) == 64
    trained = within_page_auc(ranker.predict(examples), examples.labels, examples.pages)
    assert trained > 0.65, trained  # the held-out items above the rest of their page (chance 0.5)

    untrained = Ranker(config.ranker.replace(loss="page_softmax"))
    with pytest.raises(ValueError, match="no pages"):
        untrained.fit_ratings(gen, dataset.watches)
    with pytest.raises(ValueError, match="loss must be one of"):
        config.ranker.replace(loss="pairwise")
