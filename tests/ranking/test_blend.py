"""Several candidate sources behind one ranker (retrieval/blend.py): the union, the per-source
view (hand-checked), pages built from the blend, and a blended two-stage model round trip."""

import json

import numpy as np
import pytest
from fixed_source import Fixed

from ytdnn.configuration import TwoStageConfig
from ytdnn.pipeline import Recommender
from ytdnn.retrieval.base import Context
from ytdnn.retrieval.blend import SourceView, blend, parse_sources, view_of_rows
from ytdnn.samples.streams import EventStreams
from ytdnn.training import fit_ranker, fit_sources, train_ranker

USERS = [3, 17, 42, 150]


def streams_of(histories: list[list[int]]) -> EventStreams:
    """Streams of users 1..B (row 0: the unknown user) with the given watches, times 1, 2, ..."""
    items = np.array([i for h in histories for i in h], np.int64)
    offsets = np.r_[0, 0, np.cumsum([len(h) for h in histories])].astype(np.int64)
    times = np.concatenate([np.arange(1, len(h) + 1) for h in histories]).astype(np.int64)
    n = len(histories) + 1
    return EventStreams(items, times, offsets, np.zeros(0, np.int64), np.zeros(0, np.int64),
                        np.zeros(n + 1, np.int64), np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32), True)


def test_parse_sources():
    assert parse_sources("") == []
    assert parse_sources("ease:200, cooc") == [("ease", 200), ("cooc", 100)]
    for bad in ("ease:0", "ease:x", "ease,ease"):
        with pytest.raises(ValueError):
            parse_sources(bad)


def test_blend_is_the_union_in_source_order_with_each_sources_view():
    a = Fixed("a", [0, 5, 4, 3, 2, 1])  # items 1 > 2 > 3 > 4 > 5
    b = Fixed("b", [0, 1, 2, 3, 4, 5])  # items 5 > 4 > 3 > ...
    streams = streams_of([[2], [5, 1]])
    ctx = Context.whole(streams, np.array([1, 2]))
    candidates, view = blend([(a, 2), (b, 2)], ctx)
    # user 1 watched 2: a -> [1, 3], b -> [5, 4]; user 2 watched 5, 1: a -> [2, 3], b -> [4, 3]
    np.testing.assert_array_equal(candidates, [[1, 3, 5, 4], [2, 3, 4, 0]])
    assert view.names == ("a", "b")
    np.testing.assert_array_equal(view.nominated[0], [[1, 0], [1, 0], [0, 1], [0, 1]])
    np.testing.assert_array_equal(view.ranks[0], [[1, 3], [2, 3], [3, 1], [3, 2]])
    np.testing.assert_array_equal(view.ranks[1, :3], [[1, 3], [2, 2], [3, 1]])
    np.testing.assert_array_equal(view.scores[0], [[5, 1], [3, 3], [1, 5], [2, 4]])  # real scores
    np.testing.assert_array_equal(view.scores[1, 3], [0, 0])  # the empty slot


def test_a_view_of_rows_equals_the_view_of_their_pages():
    a, b = Fixed("a", [0, 5, 4, 3, 2, 1]), Fixed("b", [0, 1, 2, 3, 4, 5])
    streams = streams_of([[2, 3], [5, 1]])
    users = np.array([1, 2, 1, 1])
    ends = np.array([1, 4, 1, 2])  # user 1 before its 2nd watch (twice), and after it
    items = np.array([3, 4, 5, 5])
    view = view_of_rows([(a, 2), (b, 2)], streams, users, ends, np.zeros(4, np.int64), np.zeros(4, np.int64), items)
    # row 0: history [2] -> a [1, 3], b [5, 4]: item 3 nominated by a at 2, rank 3 in b
    np.testing.assert_array_equal(view.ranks, [[2, 3], [3, 1], [3, 1], [3, 1]])
    np.testing.assert_array_equal(view.nominated, [[1, 0], [0, 1], [0, 1], [0, 1]])
    assert isinstance(view, SourceView) and view.scores.shape == (4, 2)


@pytest.fixture(scope="module")
def tiny(tiny_world):
    return tiny_world


def settings(extra: dict) -> TwoStageConfig:
    quick = {"ranker_train.max_epochs": 1, "ranker_train.progress": False, "ranker_train.num_threads": 1,
             "tower": "none", "impressions.num_candidates": 20, "negatives_per_page": 5,
             "requests_per_user": 2, "source": "built", "last_watches": 5}
    return TwoStageConfig().with_settings({**quick, **extra})


@pytest.mark.parametrize("source_skips", [False, True])
def test_a_ranker_learns_the_blends_view_and_serves_it(tiny, tmp_path, source_skips):
    d, gen = tiny
    config = settings({"pipeline.sources": "ease:10,cooc:10,popular:5", "ranker.source_skips": source_skips})
    ranker = fit_ranker(gen, d, config)
    # one skip weight for the generator's logit, and with source_skips one per source, learned
    weights = ranker.model_.score_weight.detach()
    assert weights.shape == ((4,) if source_skips else (1,)) and bool((weights != 0).all())
    names = ranker.featurizer_.binary_names
    assert [n for n in names if n.startswith("source_")] == [
        "source_generator_nominated", "source_ease_nominated", "source_cooc_nominated", "source_popular_nominated"]
    sources = fit_sources(gen, config)
    rec = Recommender(gen, ranker, num_candidates=20, sources=sources)
    out = rec.recommend_batch(USERS, k=30)
    for r in out:
        assert all(s for s in r.sources)  # every served item was nominated by someone
        assert len(set(r.item_ids.tolist())) == len(r.item_ids)
    assert any(set(s) - {"generator"} for r in out for s in r.sources)  # the others add items
    with pytest.raises(ValueError, match="trained with the sources"):
        Recommender(gen, ranker, num_candidates=20)
    rec.save(tmp_path / "model")
    listing = json.loads((tmp_path / "model" / "sources.json").read_text())
    assert [e["name"] for e in listing] == ["ease", "cooc", "popular"]
    again = Recommender.load(tmp_path / "model")
    for a, b in zip(out, again.recommend_batch(USERS, k=30)):
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
        assert a.sources == b.sources


def test_a_ranker_with_sources_trained_next_to_a_candidates_directory_loads_with_them(tiny, tmp_path):
    d, gen = tiny
    gen.save(tmp_path / "cands")
    train_ranker(d, tmp_path / "cands", config=settings({"pipeline.sources": "cooc:10"}))
    assert json.loads((tmp_path / "cands" / "sources.json").read_text())[0]["name"] == "cooc"
    loaded = Recommender.load(tmp_path / "cands")
    assert [s.name for s, _ in loaded.blend_sources()] == ["generator", "cooc"]
    top = loaded.recommend(USERS[0], k=5)
    assert list(top.stages) == ["ranker"] * 5 and all(top.sources)


def test_each_source_is_trained_and_saved_with_its_sections_settings(tiny, tmp_path):
    d, gen = tiny
    gen.save(tmp_path / "cands")
    config = settings({"pipeline.sources": "cooc:10,ease:10,popular:5", "cooc.window": 2, "cooc.recent": 3,
                       "ease.l2": 50.0, "popular.half_life_share": 0.5})
    train_ranker(d, tmp_path / "cands", out=tmp_path / "both", config=config)
    loaded = {s.name: s for s, _ in Recommender.load(tmp_path / "both").sources}
    assert (loaded["cooc"].cfg.window, loaded["cooc"].cfg.recent, loaded["cooc"].cfg.neighbours) == (2, 3, 100)
    assert loaded["ease"].cfg.l2 == 50.0 and loaded["popular"].cfg.half_life_share == 0.5
    saved = json.loads((tmp_path / "both" / "config.json").read_text())["settings"]
    assert saved["cooc"]["window"] == 2 and saved["ease"]["l2"] == 50.0
    # the setting changes what the source learns: a window of 1 links only adjacent watches
    wide, narrow = (fit_sources(gen, settings({"pipeline.sources": "cooc", "cooc.window": w}))[0][0] for w in (50, 1))
    assert len(narrow.neighbours_) < len(wide.neighbours_)


def test_source_skips_need_the_score_skip():
    from ytdnn.models.ranker import RankerConfig

    with pytest.raises(ValueError, match="source_skips .* needs score_skip"):
        RankerConfig(source_skips=True, score_skip=False)


def test_a_ranker_with_source_skips_exports_them(tiny, tmp_path):
    import onnxruntime as ort
    import torch

    from ytdnn.export import export_onnx, ranker_inputs

    d, gen = tiny
    config = settings({"pipeline.sources": "ease:10,cooc:10", "ranker.source_skips": True, "tower": "8"})
    ranker = fit_ranker(gen, d, config)
    sources = fit_sources(gen, config)
    manifest = export_onnx(Recommender(gen, ranker, num_candidates=20, sources=sources), tmp_path / "onnx")
    prior = next(s for s in manifest["ranker"]["members"][0]["inputs"] if s["name"] == "prior")
    assert prior["shape"] == ["batch", 3]  # the generator's logit, EASE's and co-occurrence's scores
    examples = ranker.impression_examples(gen, d.impressions.slice(0, 300),
                                          sources=[(s, n) for s, n in Recommender(gen, ranker, 20, sources=sources)
                                                   .blend_sources()])
    batch = examples.batch(np.arange(len(examples)))
    with torch.no_grad():
        expected = ranker.model_(batch).numpy()
    got = ort.InferenceSession(str(tmp_path / "onnx" / "ranker.onnx")).run(None, ranker_inputs(ranker, batch))[0]
    assert float(np.abs(got - expected).max()) <= 1e-5
