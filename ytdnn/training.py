"""Training both stages from one ``TwoStageConfig``: what ``ytdnn train candidates|ranker|all``
and the estimator call.

- ``fit_candidates``: the candidate generator, with its index.
- ``fit_ranker``: a ranker for a generator, on the log's impressions and/or on pages built from a
  generator's top N (``samples.impressions``; an unordered log's: ``samples.holdout_pages``),
  stacked so the positives were never seen.
- ``train_ranker`` / ``train_all``: the same, written as model directories.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.candidates import CandidateGenerator
from ytdnn.configuration import AUTO_CHOICES, TwoStageConfig
from ytdnn.data.schema import DataError
from ytdnn.eval.metrics import weighted_per_user_loss
from ytdnn.modeldir import CONFIG, ModelDir
from ytdnn.pipeline import KIND, Recommender
from ytdnn.ranking import Ranker, RankerBag
from ytdnn.retrieval import CoocSource, EASESource, GeneratorSource, PopularSource
from ytdnn.retrieval.blend import Sources, parse_sources
from ytdnn.samples.holdout_pages import holdout_pages, split_holdout
from ytdnn.samples.impressions import (
    drop_last_watches,
    impressions_from_candidates,
    stacking_generator,
)
from ytdnn.scale.prepare import PageJob
from ytdnn.train.distributed import is_main


def fit_candidates(dataset, config: TwoStageConfig | None = None, out_dir: str | Path | None = None,
                   on_log=None, auto: bool = False, examples: str | Path | None = None,
                   resume: bool = True) -> CandidateGenerator:
    """The candidate generator of ``config`` fit on the dataset, its index built. ``auto``: first
    choose among ``AUTO_CHOICES`` on the log's own validation split (``choose``); the chosen
    settings and every choice's figures are in ``generator.selection_["auto"]``. ``examples``: a
    `ytdnn prepare` directory to train from, streamed (``CandidateGenerator.fit_prepared``);
    the dataset may then be None: the model keeps no history (``fit_prepared``). ``resume``:
    continue the run checkpointed in ``out_dir`` (only on the same data and settings); False
    starts over."""
    config = config or TwoStageConfig()
    if examples is not None:
        if auto:
            raise ValueError("--auto chooses on the log itself; it cannot train from prepared examples")
        logs = (dataset.watches, dataset.searches, dataset.users, dataset.items) if dataset is not None else (None,) * 4
        return CandidateGenerator(**config.generator_kwargs()).fit_prepared(
            examples, *logs[:3], items=logs[3], out_dir=out_dir, resume=resume,
            on_log=on_log).build_index(config.pipeline.index)
    chosen = None
    if auto:
        config, chosen = choose(dataset, config, on_log)
        if chosen["chosen"] is not None:
            config = config.with_settings({"train.max_epochs": chosen["epochs"], "train.patience": None})
    generator = CandidateGenerator(**config.generator_kwargs()).fit(
        dataset.watches, dataset.searches, dataset.users, items=dataset.items, out_dir=out_dir, resume=resume,
        on_log=on_log)
    if chosen is not None:
        generator.selection_ = {"auto": chosen}
    return generator.build_index(config.pipeline.index)


def choose(dataset, config: TwoStageConfig, on_log=None) -> tuple[TwoStageConfig, dict]:
    """Each of ``AUTO_CHOICES`` on top of ``config``, trained with early stopping on the
    generator's own validation split (``eval.protocols.holdout_split``): the best by its monitor
    (Recall@20 by default). Returns (the chosen config, a report: "chosen", "epochs", and every
    choice's validation figures)."""
    figures, epochs = {}, {}
    for name, settings in AUTO_CHOICES.items():
        candidate = config.with_settings(settings)
        if candidate.train.patience is None:  # a choice is judged by its best epoch on the split
            candidate = candidate.with_settings({"train.patience": 3})
        gen = CandidateGenerator(**candidate.generator_kwargs()).fit(
            dataset.watches, dataset.searches, dataset.users, on_log=on_log, refit=False)
        if gen.selection_ is None:  # warned already: no user has enough watches to hold one out
            return config, {"chosen": None, "reason": "no validation split could be carved"}
        figures[name], epochs[name] = gen.selection_["valid"], gen.selection_["epochs"]
        monitor = gen.selection_["monitor"]
    best = max(figures, key=lambda name: figures[name][monitor])  # ties: the earlier choice
    report = {"chosen": best, "monitor": monitor, "epochs": epochs[best], "settings": AUTO_CHOICES[best],
              "valid": figures}
    return config.with_settings(AUTO_CHOICES[best]), report


def fit_ranker(generator: CandidateGenerator, dataset, config: TwoStageConfig | None = None,
               out_dir: str | Path | None = None, prepared: pa.Table | None = None,
               resume: bool = True) -> Ranker | RankerBag:
    """A Ranker for ``generator`` on the dataset's impressions and/or on pages built from a
    generator's top N (``config.impressions.source``). With ``last_watches`` set, the pages come
    from a stacking generator that never saw their positives, and the ranker learns its features
    from that one (it serves behind ``generator``). With ``samples`` > 1, that many rankers on
    pages built with seeds seed, seed + 1, ... (training seeds likewise), served as one RankerBag.

    An unordered log (no timestamps) has no requests to build pages at: each user's random
    ``impressions.holdout`` share of items is held out, a stacking generator (and stacking
    sources) train on the rest, and each user's page is their blend for the kept items, the
    held-out items its positives (``samples.holdout_pages``; ``horizon``, ``requests_per_user``
    and ``last_watches`` do not apply). The samples then share the holdout and its stacking
    generator, and differ in the kept negatives (and training seeds).

    out_dir: the ranker's directory, for its checkpoints and, with ``ranker_train.tensorboard``, its
    TensorBoard curves (out_dir/tb/), which then include each epoch's weighted per-user loss on the
    ranker's own training pages (``val/weighted_per_user_loss``); ``resume`` as in ``fit_candidates``.

    prepared: the built pages ``ytdnn prepare`` wrote (``scale.prepare.read_pages``), in place of
    building them here: the same pages, built by ``generator`` (no stacking, one sample, no other
    sources)."""
    config = config or TwoStageConfig()
    cfg = config.impressions
    if not generator.keeps_history and len(dataset.watches):
        raise ValueError("the candidate generator keeps no history (trained from prepared shards without --data): "
                         "the ranker's features read it, so train the generator with --data")
    if prepared is not None:
        _check_prepared_pages(generator, config)
    if not generator.featurizer_.ordered_:  # no time to request pages at: a random holdout
        pages, sources, draw = _holdout_setup(generator, dataset, config)
        own, shown, count = True, None, cfg.samples
    else:
        logged = dataset.impressions if dataset.impressions is not None and len(dataset.impressions) else None
        source = cfg.source if cfg.source != "auto" else ("built" if logged is None else "logged")
        if source in ("logged", "both") and logged is None:
            raise DataError(f"impressions source {source!r} needs a log with impressions", column="impressions")
        built, shown = source in ("built", "both"), logged if source in ("logged", "both") else None
        pages = (stacking_generator(generator, dataset, drop_last_watches(dataset.watches, cfg.last_watches))
                 if built and cfg.last_watches else generator)
        own = pages is generator  # else the features need the whole log, not the stacking generator's
        sources = _page_sources(pages, config)
        count = cfg.samples if built else 1  # logged pages are one sample: the log

        def draw(c):
            return _ranker_impressions(pages, dataset, c, built, shown, sources, prepared)
    rankers = []
    for k in range(count):
        impressions = draw(cfg.replace(seed=cfg.seed + k))
        train = config.ranker_train.replace(seed=config.ranker_train.seed + k)
        member_dir = out_dir if out_dir is None or count == 1 else Path(out_dir) / f"member-{k}"
        log = (None, None, None) if own else (dataset.watches, dataset.searches, dataset.users)
        curves = train.tensorboard and member_dir is not None  # the metric costs a feature pass
        rankers.append(Ranker(config.ranker, train).fit(
            pages, impressions, *log, items=dataset.items, out_dir=member_dir, resume=resume,
            validate=_training_page_loss(pages, impressions, *log, sources) if curves else None,
            log_impressions=False if shown is None else shown, sources=sources))
    return rankers[0] if len(rankers) == 1 else RankerBag(rankers)


def _holdout_setup(generator: CandidateGenerator, dataset, config: TwoStageConfig):
    """An unordered log's stacking: -> (the stacking generator, its blend of sources or None,
    draw(ImpressionConfig) -> its pages), all trained on the kept part of the holdout."""
    cfg = config.impressions
    if cfg.source in ("logged", "both"):
        raise DataError(f"impressions source {cfg.source!r}: an unordered log learns from built pages only "
                        "(its impressions have no time to take features before)", column="impressions")
    kept, held = split_holdout(dataset.watches, cfg.holdout, cfg.seed)
    pages = stacking_generator(generator, dataset, kept)
    sources = _page_sources(pages, config)
    return pages, sources, lambda c: holdout_pages(pages, held, c, sources)


def _page_sources(pages: CandidateGenerator, config: TwoStageConfig) -> Sources | None:
    """The blend the pages are built from (None: the page generator alone): the other sources
    are stacked with the page generator, fitted on the log it saw, so none has seen the positives."""
    others = fit_sources(pages, config)
    return [(GeneratorSource(pages), config.impressions.num_candidates), *others] if others else None


def _training_page_loss(generator: CandidateGenerator, impressions: pa.Table, watches, searches, users,
                        sources=None):
    """validate(ranker) -> {"weighted_per_user_loss": ...} on the pages the ranker trains on, with the
    features it trains on: paper table 1's metric as a training curve. fit_ranker holds no pages
    out, so the curve shows how well the ranker orders its own pages, not how it generalises."""
    clicked = impressions.column("clicked").to_numpy(zero_copy_only=False).astype(bool)
    watch_time = impressions.column("watch_time").to_numpy(zero_copy_only=False).astype(np.float64)
    pages = impressions.column("page_id").to_numpy(zero_copy_only=False)
    examples = []  # built once, at the first epoch's end: the features need the fitted featurizer

    def validate(ranker: Ranker) -> dict[str, float]:
        if not examples:
            # in_log=True: featurized as in Ranker.fit (impression_examples would count the pages
            # again in their own churn features, as for held-out pages)
            streams, q, raw, binary = ranker._featurize(generator, impressions, watches, searches, users, True,
                                                        sources)
            examples.append(ranker._examples(generator, streams, impressions, q, raw, binary))
        return {"weighted_per_user_loss": weighted_per_user_loss(ranker.predict(examples[0]), clicked,
                                                                 watch_time, pages)}

    return validate


def _ranker_impressions(pages: CandidateGenerator, dataset, cfg, built: bool, logged: pa.Table | None,
                        sources=None, prepared: pa.Table | None = None) -> pa.Table:
    """Built pages (``prepared`` when given) and/or the logged impressions as one table, page ids
    0.. and kept apart."""
    parts = []
    if built:
        parts.append(_dense_pages(prepared, 0) if prepared is not None else impressions_from_candidates(
            pages, dataset.watches, cfg, dataset.searches, dataset.users, sources=sources))
    if logged is not None:
        parts.append(_dense_pages(logged, int(pc.max(parts[0]["page_id"]).as_py()) + 1 if parts else 0))
    return pa.concat_tables([p.select(parts[0].column_names).cast(parts[0].schema) for p in parts])


def _dense_pages(impressions: pa.Table, first: int) -> pa.Table:
    """``impressions`` with page ids first, first + 1, ... (any id type -> ints)."""
    dense = np.unique(impressions["page_id"].to_numpy(), return_inverse=True)[1]
    return impressions.set_column(impressions.schema.get_field_index("page_id"), "page_id",
                                  pa.array(dense + first, pa.int64()))


def _check_prepared_pages(generator: CandidateGenerator, config: TwoStageConfig) -> None:
    """A ValueError for settings that prepared pages cannot serve (``scale.prepare.PageJob.check``)."""
    cfg = config.impressions
    if not generator.featurizer_.ordered_:
        raise ValueError("prepared pages need an ordered log (an unordered one learns from a random holdout)")
    if cfg.source == "logged":
        raise ValueError("impressions.source is 'logged': prepared pages would go unused")
    PageJob.check(cfg)
    if any(name != "generator" for name, _ in parse_sources(config.pipeline.sources)):
        raise ValueError("prepared pages are built by the generator alone: they serve neither "
                         "pipeline.sources nor --sources")


def fit_sources(generator: CandidateGenerator, config: TwoStageConfig) -> Sources:
    """The candidate sources ``config.pipeline.sources`` names ("ease:200,cooc") other than the
    generator, each with its section's settings (``config.cooc``, ...), fitted on the generator's
    training streams, over its catalogue."""
    out = []
    for name, n in parse_sources(config.pipeline.sources):
        if name == "generator":  # always there, nominating pipeline.num_candidates
            continue
        if name not in SOURCE_KINDS:
            raise ValueError(f"unknown candidate source {name!r}; known: {['generator', *SOURCE_KINDS]}")
        out.append((SOURCE_KINDS[name](generator, getattr(config, name)), n))
    return out


SOURCE_KINDS = {  # name (its TwoStageConfig section) -> (generator, settings) -> a fitted source
    "ease": lambda g, cfg: EASESource(cfg).fit(g.streams_, g.featurizer_.num_items),
    "cooc": lambda g, cfg: CoocSource(cfg).fit(g.streams_, g.featurizer_.num_items),
    "popular": PopularSource.from_generator,
}


def train_ranker(dataset, model_dir: str | Path, out: str | Path | None = None,
                 config: TwoStageConfig | None = None, prepared: pa.Table | None = None,
                 resume: bool = True) -> Recommender:
    """Train a ranker for the candidate generator of ``model_dir`` and write it: into ``out`` as a
    two-stage directory when given, else next to the generator in ``model_dir`` (ranker/).
    prepared: the pages ``ytdnn prepare`` built with that generator; resume: as in ``fit_ranker``."""
    model_dir = Path(model_dir)
    rec = Recommender.load(model_dir)
    md = ModelDir(model_dir)
    elsewhere = out is not None and Path(out).resolve() != model_dir.resolve()
    if elsewhere:
        ranker_dir = Path(out) / "ranker"  # where rec.save(out) puts it
    else:
        with md.loading():
            ranker_dir = md.path("ranker")  # confined: never written through a symlink that leaves
    # the ranker trains in the directory it is saved in: its checkpoints and tb/ lie there
    ranker = fit_ranker(rec.candidates, dataset, config, out_dir=ranker_dir, prepared=prepared, resume=resume)
    sources = fit_sources(rec.candidates, config or TwoStageConfig())
    rec = Recommender(rec.candidates, ranker, rec.num_candidates, settings=config, sources=sources)
    if not is_main():  # a data-parallel job: rank 0 writes
        return rec
    if elsewhere:
        rec.save(out)
        return rec
    with md.loading():
        document = md.read_json(CONFIG)  # a JSON object: Recommender.load checked it
    ranker.save(ranker_dir)
    with md.loading():
        rec.save_sources(md.path("."))
    if document.get("kind") == KIND:  # a two-stage directory: record the ranker and its settings
        document.update(ranker="ranker", settings=rec.settings.to_dict())
        md.path(CONFIG).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return rec


def train_all(dataset, out: str | Path, config: TwoStageConfig | None = None, auto: bool = False,
              resume: bool = True) -> Recommender:
    """Both stages on one dataset, written to ``out`` as one two-stage model directory; each stage
    trains in its own directory (checkpoints, and tb/ with ``train|ranker_train.tensorboard``).
    resume: continue the runs checkpointed there (only on the same data and settings); False
    starts over."""
    config, out = config or TwoStageConfig(), Path(out)
    generator = fit_candidates(dataset, config, out_dir=out / "candidates", auto=auto, resume=resume)
    if auto and generator.selection_["auto"]["chosen"] is not None:  # record what was trained
        config = config.with_settings(generator.selection_["auto"]["settings"])
    rec = Recommender(generator, fit_ranker(generator, dataset, config, out_dir=out / "ranker", resume=resume),
                      config.pipeline.num_candidates, settings=config,
                      sources=fit_sources(generator, config))
    if is_main():  # a data-parallel job: rank 0 writes
        rec.save(out)
    return rec
