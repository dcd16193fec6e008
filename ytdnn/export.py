"""Export a trained model for onnxruntime: ``ytdnn export --model DIR --format onnx --out DIR``.

The export directory holds:

    user_tower.onnx        the candidate generator's user tower: padded bags and user features
                           -> user_vector [B, d]
    ranker.onnx            the ranker: featurized impressions -> logit [B], and rating [B] for a
                           ranker with rating heads (a RankerBag's members are ranker-0.onnx,
                           ranker-1.onnx, ...; its logit is their mean)
    item_vectors.parquet   the output table v: id (the generator's item id, what the bags hold),
                           item_id (the original id), vector (d float32), bias (with item biases);
                           a candidate's score is user_vector · vector + bias
    search_tokens.parquet  id, token: the search-token vocabulary, when the tower reads searches
    manifest.json          every graph's inputs and outputs (name, dtype, shape), the order of
                           the features inside each input, the padding contract and the files

Bags. Inside ytdnn a bag is ragged (EmbeddingBag ids + offsets). In the graphs it is padded ids
[B, L]: 0 is padding, as it is "out of vocabulary" in training, and both are left out of the
mean, so the mask is ``ids != 0`` and is computed in the graph (a separate mask input could only
disagree with the ids). A row of zeros, or L = 0, is an empty bag: the zero vector. B and every
L are free at each call (dynamic axes). The averaging is written out (gather, mask, sum, divide)
rather than exported from EmbeddingBag: the TorchScript exporter refuses EmbeddingBag with a
padding_idx, and the dynamo exporter turns it into a Loop over bags that fails on L = 0.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the torch.export-based one. The TorchScript
exporter is deprecated since torch 2.9 and refuses ``padding_idx``; the dynamo one keeps the axis
names given here (batch, watch_history, ...) in the graph. Weights are stored inside each .onnx
file (one file to ship) unless they pass 1.5 GiB, where ONNX's 2 GiB limit makes them external
(``<file>.data`` beside it). Parity with torch is tested within 1e-5 (tests/test_export.py).
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from ytdnn.modeldir import ModelDir
from ytdnn.samples.candidate import serving_batch

FORMAT = "ytdnn.export"
VERSION = 1
EXPORTER = "torch.onnx.export(dynamo=True)"
MANIFEST = "manifest.json"
_EXTERNAL_DATA_BYTES = 1.5 * 2**30  # ONNX protobufs stop at 2 GiB
_PADDING = ("Bags are padded ids [batch, L]: 0 is padding and out-of-vocabulary alike, left out of the "
            "mean (the mask is ids != 0, computed in the graph); a row of zeros or L = 0 is an empty bag, "
            "the zero vector. batch and every L are free at each call.")


# ---- bags over padded ids ---------------------------------------------------------------------------


class PaddedBag(nn.Module):
    """An EmbeddingBag (id 0 left out: ``models.layers.mean_bag``) over padded ids, in plain ops.

    ids [B, L] -> [B, E]: the mean of the rows of ids != 0 ("mean" bags) or their sum weighted by
    per_sample_weights [B, L] ("sum" bags); an empty bag is zeros. Shares the bag's weight.
    """

    def __init__(self, bag: nn.EmbeddingBag):
        super().__init__()
        self.weight, self.mode = bag.weight, bag.mode

    def forward(self, ids: torch.Tensor, offsets: Any = None, per_sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        mask = (ids != 0).to(self.weight.dtype)  # [B, L]
        weights = mask if per_sample_weights is None else mask * per_sample_weights
        summed = (nn.functional.embedding(ids, self.weight) * weights.unsqueeze(-1)).sum(1)  # [B, E]
        if self.mode == "sum":
            return summed
        return summed / mask.sum(1, keepdim=True).clamp(min=1.0)


def _with_padded_bags(model: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """A shallow copy of ``model`` whose EmbeddingBags ``names`` take padded ids. The weights are
    shared and ``model`` itself is untouched: the copy has its own table of submodules, so no
    weight is duplicated in memory."""
    shell = copy.copy(model)
    shell._modules = dict(model._modules)
    for name in names:
        if isinstance(shell._modules.get(name), nn.EmbeddingBag):
            shell._modules[name] = PaddedBag(shell._modules[name])
    return shell


def pad_bags(ids: np.ndarray, offsets: np.ndarray, width: int | None = None) -> np.ndarray:
    """Ragged bags (ids [N], offsets [B] where each bag starts) -> [B, L] of the ids' dtype, each
    bag's ids first and 0 after them; L = ``width`` (at least the longest bag) or the longest
    bag. Per-id values (the rated bag's weights) pad alike, aligned with their ids."""
    ids, offsets = np.asarray(ids), np.asarray(offsets, np.int64)
    lengths = np.diff(np.append(offsets, len(ids)))  # [B]
    longest = int(lengths.max(initial=0))
    width = longest if width is None else width
    if width < longest:
        raise ValueError(f"width {width} is shorter than the longest bag ({longest})")
    out = np.zeros((len(offsets), width), ids.dtype)
    rows = np.repeat(np.arange(len(offsets)), lengths)
    out[rows, np.arange(len(ids)) - np.repeat(offsets, lengths)] = ids
    return out


# ---- the graphs' inputs ----------------------------------------------------------------------------


def _spec(name: str, dtype: str, shape: list, meaning: str) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape, "meaning": meaning}


def user_tower_spec(generator) -> list[dict[str, Any]]:
    """The user tower's inputs, in order: name, dtype, shape (str = a free axis), meaning."""
    cfg, sizes, ex = generator.model_cfg, generator.model_.sizes, generator.example_cfg
    spec = []
    if cfg.use_watches:
        spec.append(_spec("watch_ids", "int64", ["batch", "watch_history"],
                          f"the last <= {ex.max_watch_history} watches, generator item ids (item_vectors.parquet id)"))
        if sizes.recent_watches:
            spec.append(_spec("recent_ids", "int64", ["batch", "recent_watches"],
                              f"the last <= {ex.max_recent_watches} watches, generator item ids"))
    if cfg.use_searches:
        spec.append(_spec("search_ids", "int64", ["batch", "search_history"],
                          f"the last <= {ex.max_search_history} search tokens (search_tokens.parquet id)"))
    if cfg.use_user_features and sizes.user_categorical:
        spec.append(_spec("user_categorical", "int64", ["batch", len(sizes.user_categorical)],
                          "ids of the user's categorical features (features.user_categorical)"))
    if cfg.use_user_features and sizes.num_user_continuous:
        spec.append(_spec("user_continuous", "float32", ["batch", sizes.num_user_continuous],
                          "the user's dense features (features.user_continuous)"))
    if cfg.use_example_age:
        spec.append(_spec("example_age", "float32", ["batch"],
                          "the normalized example age: serving_example_age at serving (paper §3.3)"))
    if not spec:
        raise ValueError("this user tower reads no input: nothing to export")
    return spec


def ranker_spec(ranker) -> list[dict[str, Any]]:
    """One ranker's inputs, in order (``RankingBatch``'s fields with its bags padded)."""
    cfg, sizes = ranker.model_cfg, ranker.model_.sizes
    spec = [
        _spec("items", "int64", ["batch"], "the impressed item, ranker item ids"),
        _spec("watch_ids", "int64", ["batch", "watch_history"],
              f"the user's last <= {cfg.max_watch_history} watches before the impression, ranker item ids"),
        _spec("last_ids", "int64", ["batch", 1], "the last of them (0: none)"),
    ]
    if cfg.rated_bag:
        spec.append(_spec("rated_weights", "float32", ["batch", "watch_history"],
                          "each watch's weight in the rated bag, aligned with watch_ids"))
    for name, dtype, width, meaning in (
        ("user_categorical", "int64", len(sizes.user_categorical), "features.user_categorical"),
        ("user_continuous", "float32", sizes.num_user_continuous, "features.user_continuous"),
        ("item_categorical", "int64", len(sizes.item_categorical), "features.item_categorical"),
    ):
        if width:
            spec.append(_spec(name, dtype, ["batch", width], meaning))
    spec.append(_spec("category_ids", "int64", ["batch", "categories"], "the item's categories, ids"))
    spec.append(_spec("continuous", "float32", ["batch", sizes.num_continuous],
                      "normalized continuous and binary features (features.continuous)"))
    if cfg.score_skip and sizes.num_source_skips:
        spec.append(_spec("prior", "float32", ["batch", 1 + sizes.num_source_skips],
                          "the candidate generator's raw logit of the item, then each source's raw score"))
    elif cfg.score_skip:
        spec.append(_spec("prior", "float32", ["batch"], "the candidate generator's raw logit of the item"))
    return spec


def user_tower_inputs(generator, user_rows: np.ndarray, streams=None) -> dict[str, np.ndarray]:
    """The user tower's inputs for rows [B] of ``streams`` (default: the generator's own) as
    served (history up to now, the serving example age), each bag padded to the batch's longest."""
    streams = generator.streams_ if streams is None else streams
    batch = serving_batch(streams, generator.example_cfg, np.asarray(user_rows, np.int64),
                          generator.featurizer_.serving_age)
    return _inputs(batch, user_tower_spec(generator))


def ranker_inputs(ranker, batch) -> dict[str, np.ndarray]:
    """A RankingBatch as the ranker graph's inputs, one row per impression: the user-side inputs
    of a batch whose rows share them (``row_context``, as serving builds) are spread to every row."""
    out = _inputs(batch, ranker_spec(ranker))
    if batch.row_context is not None:
        context = batch.row_context.numpy()
        for name in _USER_SIDE & out.keys():
            out[name] = out[name][context]
    return out


_USER_SIDE = {"watch_ids", "last_ids", "rated_weights", "user_categorical", "user_continuous"}  # once per context


_OFFSETS = {"watch_ids": "watch_offsets", "recent_ids": "recent_offsets", "search_ids": "search_offsets",
            "last_ids": "last_offsets", "category_ids": "category_offsets"}  # the bags of the batches


def _inputs(batch, spec: list[dict]) -> dict[str, np.ndarray]:
    """A batch's fields named by ``spec``, its ragged bags padded (``pad_bags``)."""
    out: dict[str, np.ndarray] = {}
    for s in spec:
        name = s["name"]
        if name in _OFFSETS:
            width = 1 if name == "last_ids" else None
            value = pad_bags(getattr(batch, name).numpy(), getattr(batch, _OFFSETS[name]).numpy(), width)
        elif name == "rated_weights":  # aligned with the padded watch_ids
            value = pad_bags(batch.rated_weights.numpy(), batch.watch_offsets.numpy(), out["watch_ids"].shape[1])
        else:
            value = getattr(batch, name).numpy()
        out[name] = np.ascontiguousarray(value, dtype=np.dtype(s["dtype"]))
    return out


# ---- the graphs -------------------------------------------------------------------------------------


class _Graph(nn.Module):
    """model's forward over a batch built from positional inputs named by ``spec``; zero-width
    feature blocks the graph has no input for are made here."""

    def __init__(self, model: nn.Module, spec: list[dict], call: str, zero_width: tuple[str, ...]):
        super().__init__()
        self.model, self.names, self.call, self.zero_width = model, [s["name"] for s in spec], call, zero_width

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        rows = inputs[0].shape[0]
        fields: dict[str, Any] = {name: None for name in ("row_context", "prior", "rated_weights", *_OFFSETS.values())}
        for name in self.zero_width:  # read by the model even when no feature fills them
            fields[name] = torch.zeros(rows, 0, dtype=torch.int64 if "categorical" in name else torch.float32)
        fields.update(zip(self.names, inputs, strict=True))
        return getattr(self.model, self.call)(SimpleNamespace(**fields))


def _sample(spec: list[dict], rng: np.random.Generator, sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with: 2 rows (torch.export fixes axes of size 0 or 1) and a distinct length
    per free axis, so none is taken for another."""
    lengths = {}
    out = []
    for s in spec:
        shape = [2 if d == "batch" else lengths.setdefault(d, 3 + len(lengths)) if isinstance(d, str) else d
                 for d in s["shape"]]
        if s["dtype"] == "int64":
            out.append(torch.from_numpy(rng.integers(0, sizes.get(s["name"], 1), shape)))
        else:
            out.append(torch.from_numpy(rng.random(shape, dtype=np.float32)))
    return tuple(out)


def _export(graph: nn.Module, spec: list[dict], sample: tuple, outputs: list[dict], path: Path) -> dict[str, Any]:
    """Export ``graph`` to ``path``; -> the graph's manifest entry (inputs, outputs, files, seconds)."""
    axes = {d: torch.export.Dim(d) for s in spec for d in s["shape"] if isinstance(d, str)}
    dynamic = tuple({i: axes[d] for i, d in enumerate(s["shape"]) if isinstance(d, str)} for s in spec)
    weights = sum(p.numel() * p.element_size() for p in graph.parameters())
    modes = {m: m.training for m in graph.modules()}  # the graph shares the caller's submodules
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():  # torch's notices about its own internals, none about the model
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: \w+ will not be used")
            torch.onnx.export(graph.eval(), sample, str(path), input_names=[s["name"] for s in spec],
                              output_names=[o["name"] for o in outputs], dynamic_shapes=(dynamic,), dynamo=True,
                              external_data=weights > _EXTERNAL_DATA_BYTES, verbose=False)
    finally:
        for module, training in modes.items():
            module.training = training
    seconds = time.perf_counter() - start
    names = [i.name for i in _onnx().load(str(path), load_external_data=False).graph.input]
    if names != [s["name"] for s in spec]:  # the exporter drops inputs the graph never reads
        raise ValueError(f"{path.name}: the graph's inputs are {names}, expected {[s['name'] for s in spec]}")
    files = sorted(p.name for p in path.parent.glob(path.name + "*"))
    return {"file": path.name, "files": files, "inputs": spec, "outputs": outputs,
            "export_seconds": round(seconds, 3),
            "bytes": sum((path.parent / f).stat().st_size for f in files)}


def _onnx():
    """The onnx module, or a ValueError (one line on the command line) saying how to install it."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as err:
        raise ValueError(f"ONNX export needs the export extra: pip install 'ytdnn[export]' ({err})") from None
    return onnx


def export_onnx(model, out: str | Path) -> dict[str, Any]:
    """Export a Recommender (or its model directory, or a CandidateGenerator) into ``out``;
    -> the manifest, also written to ``out/manifest.json``."""
    from ytdnn.candidates import CandidateGenerator
    from ytdnn.pipeline import Recommender

    _onnx()  # before any work
    source = None
    if isinstance(model, str | Path):
        source, model = str(model), Recommender.load(model)
    generator, ranker = (model, None) if isinstance(model, CandidateGenerator) else (model.candidates, model.ranker)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: export writes a directory")
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous(out)
    rng = np.random.default_rng(0)  # the traced sample's ids: any valid ones
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "exporter": EXPORTER, "torch": torch.__version__,
        "source": source, "padding": _PADDING,
        "user_tower": _export_user_tower(generator, out, rng),
        "item_vectors": _write_item_vectors(generator, out),
        "ranker": None if ranker is None else _export_rankers(ranker, out, rng),
    }
    tokens = _write_tokens(generator, out)
    if tokens is not None:
        manifest["search_tokens"] = tokens
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _export_user_tower(generator, out: Path, rng: np.random.Generator) -> dict[str, Any]:
    model, f = generator.model_, generator.featurizer_
    spec = user_tower_spec(generator)
    sizes = {"watch_ids": f.num_items, "recent_ids": f.num_items, "search_ids": f.num_tokens,
             "user_categorical": min(model.sizes.user_categorical, default=1)}
    graph = _Graph(_with_padded_bags(model, ("watch_bag", "search_bag")), spec, "user_vector",
                   ("user_continuous",) if model.cfg.use_user_features else ())
    output = {"name": "user_vector", "dtype": "float32", "shape": ["batch", model.cfg.output_dim]}
    entry = _export(graph, spec, _sample(spec, rng, sizes), [output], out / "user_tower.onnx")
    entry["features"] = {"user_categorical": list(f.user_features_.categorical_),
                         "user_continuous": f.user_features_.dense_names()}
    entry["serving_example_age"] = f.serving_age
    entry["max_watch_history"] = generator.example_cfg.max_watch_history
    return entry


def _export_rankers(ranker, out: Path, rng: np.random.Generator) -> dict[str, Any]:
    members = getattr(ranker, "rankers", None)
    entries = []
    for i, member in enumerate(members or [ranker]):
        model, f = member.model_, member.featurizer_
        spec = ranker_spec(member)
        sizes = {"items": len(f.items_), "watch_ids": len(f.items_), "last_ids": len(f.items_),
                 "category_ids": f.item_features_.num_categories,
                 "user_categorical": min(model.sizes.user_categorical, default=1),
                 "item_categorical": min(model.sizes.item_categorical, default=1)}
        heads = model.cfg.rating_heads  # then RankerModel.predictions: (logits, expected ratings)
        graph = _Graph(_with_padded_bags(model, ("item_table", "category_bag", "rated_table")), spec,
                       "predictions" if heads else "forward", ("user_continuous", "user_categorical", "item_categorical"))
        outputs = [{"name": "logit", "dtype": "float32", "shape": ["batch"],
                    "meaning": "exp(logit) is the expected watch time (paper §4.2)"}]
        if heads:
            outputs.append({"name": "rating", "dtype": "float32", "shape": ["batch"],
                            "meaning": f"the expected rating ({model.cfg.rating_output} of the rating heads), "
                                       f"clipped to {model.sizes.rating_levels[0]:g}..{model.sizes.rating_levels[-1]:g}"})
        name = "ranker.onnx" if members is None else f"ranker-{i}.onnx"
        entry = _export(graph, spec, _sample(spec, rng, sizes), outputs, out / name)
        entry["features"] = {"continuous": f.input_names(), "item_categorical": list(f.item_features_.categorical_)}
        weight = getattr(member, "autorec_weight_", 0.0)
        if heads and weight:
            entry["rating_blend"] = {
                "autorec_weight": weight,
                "meaning": "ytdnn serves (1 - autorec_weight) x rating + autorec_weight x the rating "
                           "autoencoder's rating (ytdnn.models.autorec), which this graph does not hold"}
        entries.append(entry)
    return {"members": entries, "combine": "the mean of the members' logits" if members else "the one member's logit",
            "inputs_from": "ytdnn.ranking.Ranker's features of each member (ytdnn.export.ranker_inputs)"}


def _write_item_vectors(generator, out: Path) -> dict[str, Any]:
    """item_vectors.parquet: every served item (id >= 1) with its output vector and bias."""
    model, vocab = generator.model_, generator.featurizer_.items_
    with torch.no_grad():
        vectors = model.item_vectors().detach().numpy()[1:].astype(np.float32)  # [V - 1, d]
        bias = model.item_biases()
    dim = vectors.shape[1]
    columns = {
        "id": pa.array(np.arange(1, len(vocab), dtype=np.int64)),
        "item_id": vocab.token_array,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
    }
    if bias is not None:
        columns["bias"] = pa.array(bias.detach().numpy()[1:].astype(np.float32))
    pq.write_table(pa.table(columns), out / "item_vectors.parquet")
    return {"file": "item_vectors.parquet", "rows": len(vectors), "dim": dim, "columns": list(columns),
            "score": "user_vector · vector" + (" + bias" if bias is not None else ""),
            "bytes": (out / "item_vectors.parquet").stat().st_size}


def _write_tokens(generator, out: Path) -> dict[str, Any] | None:
    tokens = generator.featurizer_.tokens_
    if tokens is None or not generator.model_cfg.use_searches:
        return None
    table = pa.table({"id": pa.array(np.arange(1, len(tokens), dtype=np.int64)), "token": tokens.token_array})
    pq.write_table(table, out / "search_tokens.parquet")
    return {"file": "search_tokens.parquet", "rows": len(table),
            "tokenizer": "lowercased unigrams and bigrams of each query (ytdnn.features.text)"}


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an export directory, its files checked to lie inside it (ytdnn.modeldir):
    any failure is a one-line ModelDirError."""
    md = ModelDir(directory, what="export")
    with md.loading():
        manifest = md.read_json(MANIFEST)
        if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("version")) != (FORMAT, VERSION):
            raise md.error(f"not a version-{VERSION} {FORMAT} manifest")
        for name in _files(manifest):
            md.file(name)
    return manifest


def _files(manifest: dict[str, Any]) -> list[str]:
    """Every file an export's manifest names (graphs with their weights, tables)."""
    graphs = [manifest["user_tower"], *(manifest["ranker"] or {"members": []})["members"]]
    tables = [t for t in (manifest["item_vectors"], manifest.get("search_tokens")) if t is not None]
    return [f for g in graphs for f in g["files"]] + [t["file"] for t in tables]


def _remove_previous(out: Path) -> None:
    """An earlier export in ``out``: its files go, so none outlives the manifest that named it."""
    if not (out / MANIFEST).exists():
        return
    for name in _files(read_manifest(out)):
        (out / name).unlink(missing_ok=True)
    (out / MANIFEST).unlink()
