"""One typed configuration for both stages, in sections named after them.

``TwoStageConfig`` holds every setting of the candidate generator, the ranker and the pipeline.
The estimator, every ``ytdnn train`` command and the model directory read it; ``--set
section.key=value`` changes one setting (a bare key works when one section has it), with the
value parsed by the field's declared type, and ``ytdnn config show`` prints every key with its
value and a one-line meaning (the comment beside the field in the code).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import typing
from functools import cache
from pathlib import Path
from typing import Any

from ytdnn.candidates import DEFAULT_TRAIN
from ytdnn.config import Config, parse_setting
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.ranker import RankerConfig
from ytdnn.retrieval.blend import parse_sources
from ytdnn.retrieval.cooc import CoocConfig
from ytdnn.retrieval.ease import EASESourceConfig
from ytdnn.retrieval.popular import PopularConfig
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.impressions import ImpressionConfig
from ytdnn.train.config import TrainConfig

INDEXES = ("auto", "exact", "ivf", "hnsw")


@dataclasses.dataclass(frozen=True)
class PipelineConfig(Config):
    num_candidates: int = 500  # candidates retrieved and ranked per request
    index: str = "auto"  # nearest-neighbour index: auto = exact up to 100k items, IVF beyond
    max_items: int | None = 1_000_000  # the generator's item vocabulary: top N by watches (§3.5)
    max_tokens: int | None = 1_000_000  # the generator's search-token vocabulary: top N (§3.5)
    # Candidate sources beside the generator, "name[:n]" comma-separated: ease, cooc (item
    # co-occurrence), popular; each adds its top n (default 100) to the ranker's candidates, and
    # the ranker reads which sources nominated a candidate, their scores and ranks (paper §4).
    sources: str = ""

    def validate(self) -> None:
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.index not in INDEXES:
            raise ValueError(f"index must be one of {list(INDEXES)}, got {self.index!r}")
        parse_sources(self.sources)  # a malformed list fails here, not after training
        for name in ("max_items", "max_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be None or >= 1")


@dataclasses.dataclass(frozen=True)
class TwoStageConfig(Config):
    """Every setting of both stages. Sections: the candidate generator's model (``candidates``),
    examples (``examples``) and training (``train``); the ranker's model (``ranker``), training
    (``ranker_train``) and pages (``impressions``); the ``pipeline``'s; and one per candidate
    source that ``pipeline.sources`` can name (``ease``, ``cooc``, ``popular``), read only when it
    is named. A source's keys are always dotted (``cooc.window``), never bare."""

    candidates: CandidateConfig = dataclasses.field(default_factory=CandidateConfig)
    examples: ExampleConfig = dataclasses.field(default_factory=ExampleConfig)
    train: TrainConfig = dataclasses.field(default_factory=lambda: DEFAULT_TRAIN)
    ranker: RankerConfig = dataclasses.field(default_factory=RankerConfig)
    ranker_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    impressions: ImpressionConfig = dataclasses.field(default_factory=ImpressionConfig)
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    ease: EASESourceConfig = dataclasses.field(default_factory=EASESourceConfig)
    cooc: CoocConfig = dataclasses.field(default_factory=CoocConfig)
    popular: PopularConfig = dataclasses.field(default_factory=PopularConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TwoStageConfig:
        """Sections may be partial: a missing key keeps its default."""
        defaults = cls()
        unknown = sorted(set(values) - set(sections()))
        if unknown:
            raise ValueError(f"TwoStageConfig: unknown section(s) {unknown}; known: {list(sections())}")
        parts = {}
        for name, section in values.items():
            if not isinstance(section, dict):
                raise ValueError(  # noqa: TRY004 - one error kind for every bad setting
                    f"TwoStageConfig.{name} must be a JSON object of settings, got {section!r}")
            parts[name] = getattr(defaults, name).replace(**section)
        return dataclasses.replace(defaults, **parts)

    @classmethod
    def load(cls, path: str | Path) -> TwoStageConfig:
        """A TwoStageConfig JSON file, or a model directory's config.json (its saved settings)."""
        document = json.loads(Path(path).read_text())
        if isinstance(document, dict) and "kind" in document:
            return from_model_config(document)
        if not isinstance(document, dict):
            raise ValueError(f"{path}: a configuration is a JSON object of sections")  # noqa: TRY004
        return cls.from_dict(document)

    def with_settings(self, settings: dict[str, Any]) -> TwoStageConfig:
        """``{"ranker.tower": "256", "lr": 0.003}`` -> a new config. Keys are dotted
        ``section.key``, or bare when exactly one section has the key; text values are parsed
        by the field's declared type. An unknown or ambiguous key is a ValueError listing the
        valid dotted names."""
        by_section: dict[str, dict[str, Any]] = {}
        for key, value in settings.items():
            section, name = resolve_key(key)
            if isinstance(value, str):
                value = parse_setting(f"{section}.{name}", _hints(section)[name], value)
            by_section.setdefault(section, {})[name] = value
        return dataclasses.replace(self, **{s: getattr(self, s).replace(**v) for s, v in by_section.items()})

    def generator_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``CandidateGenerator``."""
        p = self.pipeline
        return {"model": self.candidates, "examples": self.examples, "train": self.train,
                "max_items": p.max_items, "max_tokens": p.max_tokens}

    def describe(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, one-line meaning) of every setting, section by section."""
        rows = []
        for section, cls in sections().items():
            meanings = field_meanings(cls)
            for f in dataclasses.fields(cls):
                rows.append((f"{section}.{f.name}", getattr(getattr(self, section), f.name), meanings.get(f.name, "")))
        return rows


# What `--auto` chooses among, on a validation split of the user's own log (``training.choose``):
# the defaults and the two settings that measured best on two public logs of different shapes
# (bench/results/defaults.md; the tries behind them are in bench/retrieval.py). Fixed, so the
# choice itself can never overfit more than picking one of three.
AUTO_CHOICES: dict[str, dict[str, Any]] = {
    "default": {},
    # a 7-month log of next watches (ml-100k): a narrow table, short bags and a recent-watch bag
    "compact": {"candidates.embedding_dim": 64, "candidates.output_dim": 64, "candidates.depth": 0,
                "examples.max_watch_history": 20, "examples.max_recent_watches": 5,
                "examples.max_examples_per_user": None},
    # an unordered log of ~165 ratings per user (ml-1m): a wide table, held-out bags, no user
    # features (a zip code lets the tower memorise users), a longer cosine schedule
    "wide": {"candidates.embedding_dim": 512, "candidates.output_dim": 512, "candidates.depth": 0,
             "candidates.use_user_features": False, "examples.max_watch_history": 100,
             "examples.unordered_mode": "holdout", "examples.holdout_keep": 0.2,
             "examples.holdout_exclude_kept": True, "train.batch_size": 128, "train.max_epochs": 60,
             "train.patience": 10, "train.lr_schedule": "cosine"},
}


# The candidate sources' sections: their keys are only ever dotted, so a source's ``max_items``
# or ``seed`` never makes a stage's bare key ambiguous.
SOURCE_SECTIONS = ("ease", "cooc", "popular")


@cache
def sections() -> dict[str, type[Config]]:
    """{section name: its Config class}, in order."""
    hints = typing.get_type_hints(TwoStageConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TwoStageConfig)}


def _hints(section: str) -> dict[str, Any]:
    return typing.get_type_hints(sections()[section])


def dotted_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in sections().items() for f in dataclasses.fields(cls)]


def resolve_key(key: str) -> tuple[str, str]:
    """"ranker.tower" or an unambiguous bare "tower" -> ("ranker", "tower"); a bare key names a
    stage's setting, never a source's (``SOURCE_SECTIONS``)."""
    section, dot, name = key.partition(".")
    if dot:
        if section in sections() and name in _hints(section):
            return section, name
        raise ValueError(f"unknown setting {key!r}; valid settings: {', '.join(dotted_keys())}")
    owners = [s for s in sections() if s not in SOURCE_SECTIONS and key in _hints(s)]
    if len(owners) == 1:
        return owners[0], key
    sources = [s for s in SOURCE_SECTIONS if key in _hints(s)]
    if not owners and sources:
        raise ValueError(f"{key!r} is a candidate source's setting: write {' or '.join(f'{s}.{key}' for s in sources)}")
    if not owners:
        raise ValueError(f"unknown setting {key!r}; valid settings: {', '.join(dotted_keys())}")
    raise ValueError(f"setting {key!r} is ambiguous: write one of {', '.join(f'{s}.{key}' for s in owners)}")


def from_model_config(document: dict, ranker: dict | None = None) -> TwoStageConfig:
    """The settings a model directory's config.json records: a two-stage directory's
    ``settings``, or a candidate generator's own sections, with those of the ranker trained
    beside it (``ranker``: its ranker/config.json) when it has one."""
    if "settings" in document:
        return TwoStageConfig.from_dict(document["settings"])
    if document.get("kind") == "ytdnn.candidates":
        parts = {"candidates": document["candidate"], "examples": document["examples"], "train": document["train"],
                 "pipeline": {"max_items": document["max_items"], "max_tokens": document["max_tokens"]}}
        if ranker is not None:
            parts.update(ranker=ranker["ranker"], ranker_train=ranker["train"])
        return TwoStageConfig.from_dict(parts)
    raise ValueError(f"a {document.get('kind')!r} config.json records no settings of both stages")


@cache
def field_meanings(cls: type) -> dict[str, str]:
    """{field: its one-line meaning}: the comment on the field's line, else the comment block
    above it (first sentence), which also covers the uncommented fields right after it."""
    out, block, fresh = {}, [], False
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block = block if fresh else []
            block.append(stripped.lstrip("# ").strip())
            fresh = True
            continue
        fresh = False
        match = re.match(r"(\w+)\s*:[^=]*=.*?(?:#\s*(.*))?$", stripped)
        if match and match.group(1) in cls.__dataclass_fields__:
            text = match.group(2) or " ".join(block)
            out[match.group(1)] = re.split(r"(?<=[.:;])\s(?=[A-Z\"(])", text, maxsplit=1)[0].rstrip(".:;")
        elif not stripped:
            block = []
    return out
