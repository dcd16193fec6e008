"""RetrieverContract: the tests every candidate source passes (STYLE rule 4, as tests/index/contracts.py).

Subclass it in a ``Test*`` class and define ``make(self) -> (source, streams)``: a fitted source
and the streams (catalogue ids) its contexts are drawn from. ``tiny_streams`` is a hand-made world
of 5 users over 8 items; ``tiny_generator`` a CandidateGenerator fitted on the same kind of log in
about a second (cached: every test module shares one).
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.features import NotFittedError
from ytdnn.models.candidate import CandidateConfig
from ytdnn.retrieval import Context, Retriever, load_source, save_source
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.streams import EventStreams, window_positions
from ytdnn.train.config import TrainConfig

V = 9  # catalogue ids 1..8, 0 = none

# user rows 1..5 (row 0, the unknown user, has no events); each history oldest first
HISTORIES = {
    1: [1, 2, 3, 4],
    2: [2, 3, 5, 2, 6],
    3: [1, 3, 6, 7, 8],
    4: [4, 5, 6],
    5: [7, 8, 1, 2, 3, 6],
}


def streams_of(histories: dict[int, list[int]], num_users: int | None = None, ordered: bool = True,
               times: dict[int, list[int]] | None = None) -> EventStreams:
    """EventStreams of {row: [catalogue ids, oldest first]}; watch times 10, 20, ... per user (or
    ``times``), 0 when unordered; no searches, no user features."""
    num_users = num_users or max(histories) + 1
    lengths = [len(histories.get(u, [])) for u in range(num_users)]
    items = np.array([i for u in range(num_users) for i in histories.get(u, [])], np.int64)
    if not ordered:
        stamps = np.zeros(len(items), np.int64)
    elif times is not None:
        stamps = np.array([t for u in range(num_users) for t in times.get(u, [])], np.int64)
    else:
        stamps = np.concatenate([np.zeros(0, np.int64)] + [10 * np.arange(1, n + 1) for n in lengths])
    return EventStreams(
        watch_items=items, watch_times=stamps.astype(np.int64),
        watch_offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        tokens=np.zeros(0, np.int64), token_times=np.zeros(0, np.int64),
        token_offsets=np.zeros(num_users + 1, np.int64),
        user_categorical=np.zeros((num_users, 0), np.int64),
        user_continuous=np.zeros((num_users, 0), np.float32), ordered=ordered,
    )


def tiny_streams(ordered: bool = True) -> EventStreams:
    return streams_of(HISTORIES, ordered=ordered)


def truncated(streams: EventStreams, rows: np.ndarray, watch_end: np.ndarray, token_end: np.ndarray) -> EventStreams:
    """Streams whose row b is user rows[b] with only its events before watch_end[b] / token_end[b]:
    what a source should see of a context that ends mid-stream."""
    w, _ = window_positions(streams.watch_offsets[rows], watch_end, None)
    t, _ = window_positions(streams.token_offsets[rows], token_end, None)
    return EventStreams(
        watch_items=streams.watch_items[w], watch_times=streams.watch_times[w],
        watch_offsets=np.r_[0, np.cumsum(watch_end - streams.watch_offsets[rows])].astype(np.int64),
        tokens=streams.tokens[t], token_times=streams.token_times[t],
        token_offsets=np.r_[0, np.cumsum(token_end - streams.token_offsets[rows])].astype(np.int64),
        user_categorical=streams.user_categorical[rows], user_continuous=streams.user_continuous[rows],
        ordered=streams.ordered,
    )


def tiny_tables(ordered: bool = True) -> tuple[pa.Table, pa.Table]:
    """(watches, searches) of 6 users over items 10..17 (original ids, not catalogue ids)."""
    rng = np.random.default_rng(0)
    users, items, stamps = [], [], []
    for u in range(6):
        group = [10, 11, 12, 13] if u % 2 else [14, 15, 16, 17]
        for j, item in enumerate(rng.choice(group + [10 + u], size=6)):
            users.append(f"u{u}")
            items.append(int(item))
            stamps.append(100 * u + 10 * j + 1)
    watches = {"user_id": users, "item_id": items,
               "timestamp": pa.array(stamps if ordered else [None] * len(stamps), pa.int64())}
    searches = pa.table({"user_id": ["u1", "u1", "u2", "u4"], "query": ["red cars", "blue", "red", "cats"],
                         "timestamp": [5, 135, 215, 415]})
    return pa.table(watches), searches if ordered else None


@functools.cache
def tiny_generator(ordered: bool = True) -> CandidateGenerator:
    """A CandidateGenerator fitted on ``tiny_tables`` (~1 s); shared, so never mutate its model."""
    torch.set_num_threads(1)
    watches, searches = tiny_tables(ordered)
    return CandidateGenerator(
        CandidateConfig(embedding_dim=4, output_dim=4, depth=0, num_negatives=None),
        ExampleConfig(max_watch_history=3, max_examples_per_user=None),
        TrainConfig(lr=3e-2, batch_size=16, max_epochs=3, progress=False, num_threads=1, seed=0),
    ).fit(watches, searches)


class RetrieverContract:
    name: str = ""
    history_matters = True  # False for a source that gives every user the same list

    def make(self) -> tuple[Retriever, EventStreams]:
        raise NotImplementedError

    def make_unfitted(self, source: Retriever) -> Retriever:
        """A source of the same kind before fit; the constructor may refuse instead."""
        return type(source)()

    # class-scoped: each source is fitted once per test class
    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls):
        return cls().make()

    @pytest.fixture
    def source(self, fitted):
        return fitted[0]

    @pytest.fixture
    def ctx(self, fitted) -> Context:
        streams = fitted[1]
        return Context.whole(streams, np.arange(streams.num_users))  # row 0: an empty history

    def test_is_a_retriever(self, source):
        assert isinstance(source, Retriever)
        assert source.name == self.name and isinstance(source.num_items, int) and source.num_items >= 2

    def test_shapes_dtypes_and_ids(self, source, ctx):
        ids, scores = source.retrieve(source.encode(ctx), 4)
        assert ids.shape == scores.shape == (len(ctx), 4)
        assert ids.dtype == np.int64 and scores.dtype == np.float32
        assert ((ids >= 0) & (ids < source.num_items)).all()
        # id 0 exactly where the score is -inf; every real id has a finite score
        np.testing.assert_array_equal(ids == 0, np.isneginf(scores))
        assert np.isfinite(scores[ids > 0]).all()
        for row in ids:  # no id twice in a row
            assert len(set(row[row > 0])) == int((row > 0).sum())

    def test_best_first_and_ties_to_the_lower_id(self, source, ctx):
        ids, scores = source.retrieve(source.encode(ctx), source.num_items)
        assert (scores[:, 1:] <= scores[:, :-1]).all()  # (-inf - -inf is NaN: no np.diff)
        same = (scores[:, 1:] == scores[:, :-1]) & (ids[:, 1:] > 0)
        assert (ids[:, 1:][same] > ids[:, :-1][same]).all()

    def test_exclusions_are_never_returned(self, source, ctx):
        watched = ctx.watched()
        exclude = [np.r_[w, [-3, 10**6]] for w in watched]  # ids outside the catalogue: ignored
        exclude[1] = None  # None: nothing excluded
        ids, _ = source.retrieve(source.encode(ctx), source.num_items, exclude)
        for row, excluded in enumerate(exclude):
            if excluded is not None:
                assert not np.isin(ids[row], excluded[excluded > 0]).any()
        everything = [np.arange(source.num_items)] * len(ctx)
        ids, scores = source.retrieve(source.encode(ctx), 3, everything)
        assert (ids == 0).all() and np.isneginf(scores).all()

    def test_score_equals_the_retrieved_scores(self, source, ctx):
        state = source.encode(ctx)
        ids, scores = source.retrieve(state, source.num_items, ctx.watched())
        again = source.score(state, ids)
        assert again.shape == ids.shape and again.dtype == np.float32
        np.testing.assert_allclose(again[ids > 0], scores[ids > 0], rtol=1e-5, atol=1e-5)
        assert np.isneginf(again[ids == 0]).all()
        assert np.isneginf(source.score(state, np.zeros((len(ctx), 2), np.int64))).all()
        assert source.score(state, np.zeros((len(ctx), 0), np.int64)).shape == (len(ctx), 0)

    def test_k_beyond_the_catalogue_pads(self, source, ctx):
        k = source.num_items + 5
        ids, scores = source.retrieve(source.encode(ctx), k)
        assert ids.shape == (len(ctx), k)
        assert ((ids[:, -6:] == 0) & np.isneginf(scores[:, -6:])).all()  # at most V - 1 real ids
        real = ids > 0  # padding only after the real ids
        assert not (np.diff(real.astype(int), axis=1) > 0).any()

    def test_batch_equals_one_user_at_a_time(self, source, ctx):
        exclude = ctx.watched()
        ids, scores = source.retrieve(source.encode(ctx), 5, exclude)
        for row in range(len(ctx)):
            one = Context(ctx.streams, ctx.rows[row : row + 1], ctx.watch_end[row : row + 1],
                          ctx.token_end[row : row + 1], ctx.now[row : row + 1])
            one_ids, one_scores = source.retrieve(source.encode(one), 5, exclude[row : row + 1])
            np.testing.assert_array_equal(one_ids[0], ids[row])
            np.testing.assert_allclose(one_scores[0], scores[row], rtol=1e-6)

    def test_an_empty_batch(self, source, fitted):
        empty = Context.whole(fitted[1], np.zeros(0, np.int64))
        ids, scores = source.retrieve(source.encode(empty), 3, [])
        assert ids.shape == scores.shape == (0, 3)

    def test_a_context_ending_mid_stream_ignores_later_events(self, source, fitted):
        streams = fitted[1]
        rows = np.arange(1, streams.num_users)
        lengths = np.diff(streams.watch_offsets)[rows]
        watch_end = streams.watch_offsets[rows] + lengths // 2  # the first half of each history
        token_end = streams.token_offsets[rows] + np.diff(streams.token_offsets)[rows] // 2
        ctx = Context(streams, rows, watch_end, token_end, np.zeros(len(rows), np.int64))
        cut = truncated(streams, rows, watch_end, token_end)
        expected = Context.whole(cut, np.arange(len(rows)))
        got = source.retrieve(source.encode(ctx), 6, expected.watched())
        want = source.retrieve(source.encode(expected), 6, expected.watched())
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
        whole = Context.whole(streams, rows)
        later = source.retrieve(source.encode(whole), 6, expected.watched())
        assert (not np.array_equal(later[1], got[1])) is self.history_matters  # the cut mattered

    def test_save_load_gives_identical_results(self, source, ctx, tmp_path):
        save_source(source, tmp_path / "source")
        assert (tmp_path / "source" / "config.json").is_file()
        exclude = ctx.watched()
        state = source.encode(ctx)
        expected = source.retrieve(state, 6, exclude)
        for again in (load_source(tmp_path / "source"), type(source).load(tmp_path / "source")):
            assert type(again) is type(source) and again.num_items == source.num_items
            ids, scores = again.retrieve(again.encode(ctx), 6, exclude)
            np.testing.assert_array_equal(ids, expected[0])
            np.testing.assert_array_equal(scores, expected[1])
        for path in (tmp_path / "source").rglob("*.npz"):  # plain arrays, no pickle
            np.load(path, allow_pickle=False).files  # noqa: B018

    def test_an_unfitted_source_says_so(self, source, ctx):
        state = source.encode(ctx)
        with pytest.raises(NotFittedError, match=r"fit"):
            unfitted = self.make_unfitted(source)
            unfitted.retrieve(unfitted.encode(ctx), 2)
        with pytest.raises(NotFittedError):
            self.make_unfitted(source).score(state, np.ones((len(ctx), 1), np.int64))

    def test_bad_inputs_raise(self, source, ctx):
        state = source.encode(ctx)
        for k in (0, -2):
            with pytest.raises(ValueError, match="k must be positive"):
                source.retrieve(state, k)
        for k in (2.5, True):
            with pytest.raises(TypeError, match="k must be an integer"):
                source.retrieve(state, k)
        with pytest.raises(ValueError, match="one entry per user"):
            source.retrieve(state, 2, [np.array([1])])
        b = len(ctx)
        for items in (np.full((b, 1), source.num_items), np.full((b, 1), -1)):
            with pytest.raises(ValueError, match="catalogue ids in"):
                source.score(state, items)
        with pytest.raises(ValueError, match="catalogue ids"):
            source.score(state, np.ones(b, np.int64))  # 1-D
        with pytest.raises(ValueError, match="catalogue ids"):
            source.score(state, np.ones((b + 1, 2), np.int64))  # another batch
        with pytest.raises(ValueError, match="integer"):
            source.score(state, np.ones((b, 2)))
