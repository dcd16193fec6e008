"""The two-stage recommender (paper fig. 2): retrieve hundreds of candidates, rank them, serve top k.

    rec = Recommender(generator, ranker, num_candidates=500)
    rec.recommend("u1", k=10)            # Recommendation: item ids, scores, stage of each item
    rec.save("model"); Recommender.load("model")

A model directory holds both stages and nothing executable:

    config.json        {"kind": "ytdnn.recommender", "num_candidates": 500, ...}
    candidates/        the candidate generator's model directory (ytdnn.candidates)
    ranker/            the ranker's model directory (ytdnn.ranker), when there is one
    sources.json       the other candidate sources (retrieval.blend), when there are, each in
    sources/NAME/      its own folder (ytdnn.retrieval.store)

``load`` also accepts a candidate generator's own directory, with the ranker (if any) in its
``ranker/`` subfolder: that is what ``ytdnn train ranker --model DIR`` writes next to an existing
candidates model, so a trained generator never has to be moved.

Scores: with a ranker, an item's score is the ranker's expected watch time exp(logit) and its
stage is "ranker"; without one, the score is the generator's logit and the stage "candidates".
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ytdnn.candidates import CandidateGenerator
from ytdnn.configuration import TwoStageConfig
from ytdnn.modeldir import CONFIG, ModelDir, remove_entries
from ytdnn.ranking import Ranker, load_ranker
from ytdnn.retrieval.base import Context
from ytdnn.retrieval.blend import Sources, blend
from ytdnn.retrieval.generator import GeneratorSource, item_table, queries
from ytdnn.retrieval.store import load_source, save_source
from ytdnn.samples.ranking import corpus_ranks

FORMAT_VERSION = 2  # 2: config.json records the settings of both stages (TwoStageConfig)
KIND = "ytdnn.recommender"
SOURCES = "sources.json"  # the other candidate sources, when there are: [{name, dir, candidates}]
_CONFIG_SCHEMA = {  # config.json of a two-stage directory; the stages' folders, relative to it
    "format_version": int, "kind": str, "num_candidates": int, "candidates": str,
    "ranker": str | None, "settings": dict,
}


@dataclass
class Recommendation:
    """Top k for one user. item_ids [k] original ids; scores [k]; stages [k] ("ranker" or
    "candidates"); candidate_scores [k] generator logits; candidate_ranks [k] 1-based positions
    in the retrieved list; sources [k] the names of the candidate sources that nominated each item."""

    user: Any
    item_ids: np.ndarray
    scores: np.ndarray
    stages: np.ndarray
    candidate_scores: np.ndarray
    candidate_ranks: np.ndarray
    sources: list[tuple[str, ...]] = dataclasses.field(default_factory=list)


class Recommender:
    """Holds a fitted CandidateGenerator and, optionally, a fitted Ranker."""

    def __init__(self, candidates: CandidateGenerator, ranker: Ranker | None = None, num_candidates: int = 500,
                 settings: TwoStageConfig | None = None, fast_path: bool = False, sources: Sources | None = None):
        """settings: the configuration both stages were trained with, recorded in the model
        directory (default: what the stages themselves hold).
        fast_path: rank with every item's share of the ranker's first layer precomputed
        (``Ranker.rank_candidates(fast=True)``): the same lists, scores equal up to float
        rounding (~1e-6 relative); what ``ytdnn serve`` uses. Off by default, so evaluations
        reproduce their recorded figures to the last digit.
        sources: more candidate sources beside the generator, (Retriever, n_s) each
        (``retrieval.blend``): each adds its top n_s to the generator's num_candidates, and the
        ranker, which must have been trained with the same sources, reads their view."""
        if not isinstance(num_candidates, int) or num_candidates < 1:
            raise ValueError(f"num_candidates must be an int >= 1, got {num_candidates!r}")
        self.candidates, self.ranker, self.num_candidates = candidates, ranker, num_candidates
        self.sources = list(sources or [])
        if ranker is not None:
            ranker.featurizer_.check_generator(candidates)
            wanted = ranker.featurizer_.source_names_
            given = tuple(s.name for s, _ in self.blend_sources()) if self.sources else ()
            if wanted != given:
                raise ValueError(f"the ranker was trained with the sources {list(wanted)}, given {list(given)}")
        self.fast_path = fast_path
        self.settings = _settings_of(candidates, ranker, num_candidates, settings)
        self.timings_: dict[str, float] = {}  # seconds per stage of the last call
        self._item_matrix: tuple[np.ndarray, np.ndarray] | None = None

    def recommend(self, user: Any, k: int = 10, now: int | None = None, history: Any = None,
                  features: pa.Table | None = None) -> Recommendation:
        """Top k for one user id (unknown users are served as cold start); see recommend_batch."""
        return self.recommend_batch([user], k, now, None if history is None else [history], features)[0]

    def recommend_batch(self, users: Any, k: int = 10, now: Any = None, histories: Sequence[Any] | None = None,
                        features: pa.Table | None = None) -> list[Recommendation]:
        """Top k for each of B user ids. Items the user already watched are never served.

        histories: None serves from the training log; else B histories read at request time
        (``ytdnn.serve.events.History``: ``.watches`` with item_id/timestamp, ``.searches`` with
        query/timestamp, oldest first), which replace the training log for those users.
        features: a users table of B rows (user_id + feature columns) sent with the request; by
        default known users keep their stored features and unknown ones have none.
        now: seconds (data time) of the request, one for all or one per user [B]; default just
        after the last training watch, or after the user's newest event when later.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        users = list(users)
        gen, timings = self.candidates, {}
        streams = None if histories is None else self._fresh_streams(users, histories, features)
        if now is None:
            now = gen.featurizer_.window_end_ + 1
            if streams is not None:  # after each user's newest event (data time)
                last = np.maximum.reduceat(np.r_[streams.watch_times, 0], streams.watch_offsets[:-1])
                now = np.maximum(now, np.where(np.diff(streams.watch_offsets) > 0, last + 1, 0))
        now = np.asarray(now, np.int64)
        if np.ndim(now) not in (0, 1) or (np.ndim(now) == 1 and len(now) != len(users)):
            raise ValueError(f"now must be one time or one per user ({len(users)}), got shape {np.shape(now)}")
        rows, vectors, candidates, scores, ranks = self._retrieve(users, max(self.num_candidates, k), timings,
                                                                 streams)
        view = None
        if self.sources:
            candidates, scores, ranks, view = self._blend(rows, vectors, candidates, now, timings, streams)
        if self.ranker is not None:
            known = None if streams is None else gen.user_rows(users)
            final = self.ranker.rank_candidates(gen, gen.streams_ if streams is None else streams, rows,
                                                candidates, scores, ranks, now, timings, known,
                                                fast=self.fast_path, view=view)
            stage = "ranker"
        else:
            final, stage = np.where(candidates > 0, scores, -np.inf), "candidates"
        start = time.perf_counter()
        order = np.argsort(-final, axis=1, kind="stable")[:, :k]  # ties keep the retrieval order
        id_type = np.int64 if gen.featurizer_.items_.token_type_ == "int" else object
        out = []
        for b, user in enumerate(users):
            top = order[b][np.isfinite(final[b, order[b]])]
            ids = gen.featurizer_.items_.decode(candidates[b, top])
            names = [("generator",)] * len(top) if view is None else \
                [tuple(n for n, on in zip(view.names, flags) if on) for flags in view.nominated[b, top]]
            out.append(Recommendation(
                user=user, item_ids=np.array(ids, dtype=id_type),
                scores=final[b, top], stages=np.full(len(top), stage), candidate_scores=scores[b, top],
                candidate_ranks=top + 1, sources=names))
        timings["select"] = time.perf_counter() - start
        self.timings_ = timings
        return out

    def top_items(self, users: Sequence[Any], k: int, now: Any = None, batch_size: int = 256) -> list[np.ndarray]:
        """The top k item ids of each of B users (an evaluation's lists), ``batch_size`` at a time;
        now: one time, or one per user [B]."""
        users, out = list(users), []
        for a in range(0, len(users), batch_size):
            when = now if now is None or np.ndim(now) == 0 else np.asarray(now)[a : a + batch_size]
            out += [r.item_ids for r in self.recommend_batch(users[a : a + batch_size], k, now=when)]
        return out

    def _fresh_streams(self, users: list, histories: Sequence[Any], features: pa.Table | None):
        if len(histories) != len(users) or (features is not None and len(features) != len(users)):
            raise ValueError(f"histories and features must have one entry per user ({len(users)})")
        if features is None:
            features = pa.table({"user_id": pa.array(users, self.candidates.featurizer_.users_.token_array.type)})
        return self.candidates.fresh_streams(
            [[w.item_id for w in h.watches] for h in histories], [[s.query for s in h.searches] for h in histories],
            features, [[w.timestamp for w in h.watches] for h in histories],
            [[s.timestamp for s in h.searches] for h in histories])

    def _retrieve(self, users: list, n: int, timings: dict, streams=None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """-> user rows [B], user vectors [B, d], candidates [B, n] generator ids (0 = empty), scores [B, n] logits,
        corpus ranks [B, n] (``corpus_ranks`` among the retrieved and the watched items: for an
        exact index, the full-corpus rank the ranker trained on)."""
        gen = self.candidates
        start = time.perf_counter()
        rows = gen.user_rows(users) if streams is None else np.arange(len(users), dtype=np.int64)
        vectors = gen.user_vectors(rows, streams=streams)  # [B, d]
        timings["user_tower"] = time.perf_counter() - start
        start = time.perf_counter()
        watched = [gen.watched(r, streams) for r in rows]
        if getattr(gen, "index_", None) is None:
            gen.build_index()
        scores, candidates = gen.index_.search(queries(vectors, gen.model_), n, exclude=watched)  # -1 = none
        timings["search"] = time.perf_counter() - start
        start = time.perf_counter()
        candidates = np.maximum(candidates, 0)  # 0 = empty slot from here on
        scores = np.where(candidates > 0, scores, -np.inf).astype(np.float64)
        ranks = self._corpus_ranks(vectors, watched, scores)
        timings["candidate_ranks"] = time.perf_counter() - start
        return rows, vectors, candidates, scores, ranks

    def blend_sources(self) -> Sources:
        """The generator (nominating num_candidates) followed by the other sources."""
        if getattr(self, "_generator_source", None) is None:  # kept: it caches the item matrix
            self._generator_source = GeneratorSource(self.candidates)
        return [(self._generator_source, self.num_candidates), *self.sources]

    def _blend(self, rows: np.ndarray, vectors: np.ndarray, candidates: np.ndarray, now: np.ndarray,
               timings: dict, streams=None):
        """The generator's candidates [B, n] (for user vectors [B, d]) and every other source's
        top n_s, merged (``retrieval.blend``): -> candidates [B, N], the generator's scores and
        corpus ranks [B, N] (as ``candidate_features`` computes them for training pages) and the
        SourceView."""
        start = time.perf_counter()
        gen, others = self.candidates, [None] * len(self.sources)
        ctx = Context.whole(gen.streams_ if streams is None else streams, rows, now)
        merged, view = blend(self.blend_sources(), ctx, [candidates, *others], [vectors, *others])
        items, bias = self._items()
        full = vectors @ items[1:].T + bias[1:]  # [B, V - 1] every real item
        scores = np.take_along_axis(full, np.maximum(merged - 1, 0), axis=1)  # [B, N]
        context = np.repeat(np.arange(len(merged)), merged.shape[1])
        ranks = corpus_ranks(full, context, scores.ravel()).reshape(merged.shape)
        scores = np.where(merged > 0, scores.astype(np.float64), -np.inf)
        ranks = np.where(merged > 0, ranks, len(items) - 1)
        timings["blend"] = time.perf_counter() - start
        return merged, scores, ranks, view

    def _corpus_ranks(self, vectors: np.ndarray, watched: list[np.ndarray], scores: np.ndarray) -> np.ndarray:
        """[B, n] ``corpus_ranks`` of retrieved candidates scoring ``scores`` [B, n] (-inf: empty
        slot) for user vectors [B, d]: among the retrieved and the watched items, which for an
        exact index hold every item that scores above a retrieved one."""
        items, bias = self._items()
        b, n = scores.shape
        lengths = np.array([len(w) for w in watched], np.int64)
        pool = np.full((b, n + int(lengths.max(initial=0))), -np.inf)  # [B, n + W]
        pool[:, :n] = scores
        if lengths.sum():
            flat = np.concatenate(watched)
            row = np.repeat(np.arange(b), lengths)
            slot = n + np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            pool[row, slot] = (items[flat] * vectors[row]).sum(axis=1) + bias[flat]  # [Wt] u · v + b
        return corpus_ranks(pool, np.repeat(np.arange(b), n), scores.ravel()).reshape(b, n)

    def _items(self) -> tuple[np.ndarray, np.ndarray]:
        if self._item_matrix is None:
            items, bias = item_table(self.candidates.model_)
            self._item_matrix = (items, np.zeros(len(items), np.float32) if bias is None else bias)
        return self._item_matrix

    # ---- model directory --------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.candidates.save(directory / "candidates")
        if self.ranker is not None:
            self.ranker.save(directory / "ranker")
        self.save_sources(directory)
        config = {"format_version": FORMAT_VERSION, "kind": KIND, "num_candidates": self.num_candidates,
                  "candidates": "candidates", "ranker": "ranker" if self.ranker is not None else None,
                  "settings": self.settings.to_dict()}
        (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return directory

    def save_sources(self, directory: Path) -> None:
        """Write the other candidate sources and sources.json into ``directory``, replacing any
        an earlier model left there (none: none is left)."""
        remove_entries(directory, [SOURCES, "sources"])
        if self.sources:
            listing = [{"name": src.name, "dir": f"sources/{src.name}", "candidates": n} for src, n in self.sources]
            for (src, _), entry in zip(self.sources, listing):
                save_source(src, directory / entry["dir"])
            (directory / SOURCES).write_text(json.dumps(listing, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, num_candidates: int | None = None, fast_path: bool = False,
             history: bool = True) -> Recommender:
        """A two-stage directory, or a candidates directory (with an optional ranker/ inside);
        fast_path as in ``Recommender``; history=False reads no training history (history.npz):
        the caller brings the histories of the users it scores (ytdnn.scale.score).

        Both stages must lie inside ``directory`` and any failure is a ModelDirError (a
        ValueError) naming the directory and the file (ytdnn.modeldir).
        """
        md = ModelDir(directory)
        with md.loading():
            if md.kind() == KIND:
                config = md.config(_CONFIG_SCHEMA, KIND, FORMAT_VERSION)
                if config["num_candidates"] < 1:
                    raise md.error(f"num_candidates must be >= 1, got {config['num_candidates']}")
                generator = CandidateGenerator.load(md.folder(config["candidates"]), history)
                ranker_dir, n = config["ranker"], config["num_candidates"]
                settings = TwoStageConfig.from_dict(config["settings"])
            else:  # a candidate generator's own directory
                generator = CandidateGenerator.load(directory, history)
                ranker_dir, n, settings = ("ranker" if md.has("ranker/config.json") else None), 500, None
            ranker = load_ranker(md.folder(ranker_dir)) if ranker_dir is not None else None
            sources = _load_sources(md, generator)
            md.current = ranker_dir or CONFIG  # a ranker trained for another generator
            rec = cls(generator, ranker, n, settings, sources=sources)
        # the caller's num_candidates is no fault of the directory: its error is raised as is
        if num_candidates is not None:
            rec = cls(generator, ranker, num_candidates, settings, sources=sources)
        rec.fast_path = fast_path
        return rec


def generator_dir(directory: str | Path) -> Path:
    """The candidate generator's folder of a two-stage directory, or ``directory`` itself when it
    is a candidates directory (a ModelDirError when it is neither)."""
    md = ModelDir(directory)
    with md.loading():
        if md.kind() == KIND:
            return md.folder(md.config(_CONFIG_SCHEMA, KIND, FORMAT_VERSION)["candidates"])
    return Path(directory)


def _load_sources(md: ModelDir, generator: CandidateGenerator) -> Sources:
    """The other candidate sources listed in sources.json (none when it is absent)."""
    if not md.has(SOURCES):
        return []
    listing = md.read_json(SOURCES)
    md.current = SOURCES
    if not isinstance(listing, list) or not all(
            isinstance(e, dict) and isinstance(e.get("dir"), str) and isinstance(e.get("candidates"), int)
            and e["candidates"] >= 1 for e in listing):
        raise md.error('must list {"name", "dir", "candidates" >= 1} per source')
    sources = [(load_source(md.folder(e["dir"]), generator), e["candidates"]) for e in listing]
    md.current = SOURCES
    for (src, _), e in zip(sources, listing):  # load_source checked the catalogue's size
        if src.name != e.get("name"):
            raise md.error(f"{e['dir']} holds the source {src.name!r}, listed as {e.get('name')!r}")
    return sources


def _settings_of(candidates: CandidateGenerator, ranker, num_candidates: int,
                 settings: TwoStageConfig | None) -> TwoStageConfig:
    """The given settings, or those the fitted stages hold, with this num_candidates."""
    if settings is None:
        g = candidates
        settings = TwoStageConfig(candidates=g.model_cfg, examples=g.example_cfg, train=g.train_cfg)
        first = getattr(ranker, "rankers", [ranker])[0]  # a RankerBag's members share their configs
        if first is not None:
            settings = dataclasses.replace(settings, ranker=first.model_cfg, ranker_train=first.train_cfg)
        settings = settings.with_settings({"pipeline.max_items": g.max_items, "pipeline.max_tokens": g.max_tokens})
    return settings.with_settings({"pipeline.num_candidates": num_candidates})
