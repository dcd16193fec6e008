"""Resumable training state on disk: tensors as safetensors, everything else as JSON, never pickle.

Layout under out_dir/checkpoint/:

    LATEST                    one line naming the complete checkpoint, e.g. "epoch-0003-1f2e3d4c"
    epoch-0003-1f2e3d4c/
        model.safetensors     model.state_dict() (parameters and buffers), tied tensors stored once
        best.safetensors      the best epoch's weights, only when they differ from model.safetensors
        optimizer.safetensors every tensor of the optimizer state (Adam moments, step counts)
        state.json            epoch, step, history, early-stopping counters, the optimizer's
                              hyperparameters and non-tensor state, the TrainConfig

Atomicity: a checkpoint is written into a fresh hidden directory, fsync'ed, and only then published
by atomically replacing LATEST (os.replace of a one-line file). A crash at any point before that
leaves LATEST naming the previous, complete checkpoint; older directories are deleted only after.

RNG state is not stored: `fit` reseeds every generator at the start of each epoch from
(seed, epoch), so (seed, epoch) is all a resumption needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ytdnn.train.optim import Optimizer

FORMAT_VERSION = 1
DIRNAME = "checkpoint"
_ALIASES_KEY = "ytdnn.aliases"  # safetensors metadata: {"dropped name": "name stored instead"}


def data_fingerprint(*parts: Any) -> str:
    """A digest of what a run trains on, stored in its checkpoints so that a run is resumed only
    on the data it started on. parts: arrays, dataclasses of arrays (read field by field), and
    JSON-able settings or token lists."""
    digest = hashlib.blake2b(digest_size=16)

    def add(part: Any) -> None:
        if isinstance(part, np.ndarray) and part.dtype != object:
            digest.update(f"{part.dtype.str}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).reshape(-1).view(np.uint8).data)
        elif dataclasses.is_dataclass(part) and not isinstance(part, type):
            for field in dataclasses.fields(part):
                digest.update(field.name.encode())
                add(getattr(part, field.name))
        else:
            digest.update(json.dumps(part.tolist() if isinstance(part, np.ndarray) else part,
                                     sort_keys=True, default=str).encode())

    for part in parts:
        add(part)
    return digest.hexdigest()


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / DIRNAME


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The directory of the last complete checkpoint under out_dir, or None when there is none."""
    root = checkpoint_dir(out_dir)
    try:
        name = (root / "LATEST").read_text().strip()
    except FileNotFoundError:
        return None
    path = root / name
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{root / 'LATEST'} names {name!r}, which is missing or incomplete")
    return path


def checkpoint_state(out_dir: str | Path) -> dict[str, Any] | None:
    """The JSON part of the last checkpoint (epoch, loop state, optimizer scalars), or None.

    Cheap: reads no tensors, so `fit` can check a checkpoint fits its config before loading it.
    """
    path = latest_checkpoint(out_dir)
    return None if path is None else _read_document(path)


def save_checkpoint(
    out_dir: str | Path,
    epoch: int,
    model: nn.Module,
    optimizer: Optimizer,
    state: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Atomically write the checkpoint after `epoch` epochs; returns its directory.

    state: JSON-able dict of the loop's scalars (step, history, ...); stored as state.json["loop"].
    best_state: a `snapshot()` of the best weights, or None when they are the model's current ones.
    """
    root = checkpoint_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    # A new name every time, so the live checkpoint is never touched before LATEST moves on.
    name = f"epoch-{epoch:04d}-{uuid.uuid4().hex[:8]}"
    tmp = root / f".tmp-{name}"
    tmp.mkdir()
    save_tensors(model.state_dict(), tmp / "model.safetensors")
    if best_state is not None:
        save_tensors(best_state, tmp / "best.safetensors")
    optimizer_tensors, optimizer_json = _optimizer_to_parts(optimizer)
    save_tensors(optimizer_tensors, tmp / "optimizer.safetensors")
    document = {"format_version": FORMAT_VERSION, "epoch": epoch, "loop": state,
                "optimizer": optimizer_json}
    _write_text(tmp / "state.json", json.dumps(document, indent=1, sort_keys=True) + "\n")
    _fsync_dir(tmp)

    final = root / name
    os.replace(tmp, final)
    _write_text(root / ".LATEST.tmp", name + "\n")
    os.replace(root / ".LATEST.tmp", root / "LATEST")  # the commit point
    _fsync_dir(root)
    for old in root.iterdir():  # earlier checkpoints and temp dirs of crashed writes
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


@dataclasses.dataclass
class CheckpointParts:
    """A checkpoint read into memory, not yet applied: what rank 0 of a data-parallel job
    broadcasts to the others (``ytdnn.train.distributed``), so only rank 0 reads the files.

    document: state.json; model, optimizer: the tensors of model.safetensors and
    optimizer.safetensors; best: best.safetensors, or None when the best weights are the model's.
    """

    document: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None = None


def read_checkpoint(out_dir: str | Path) -> CheckpointParts | None:
    """The last checkpoint under out_dir, read but not applied; None when there is none."""
    path = latest_checkpoint(out_dir)
    if path is None:
        return None
    best_file = path / "best.safetensors"
    return CheckpointParts(_read_document(path), load_tensors(path / "model.safetensors"),
                           load_tensors(path / "optimizer.safetensors"),
                           load_tensors(best_file) if best_file.is_file() else None)


def apply_checkpoint(
    parts: CheckpointParts, model: nn.Module, optimizer: Optimizer | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Load ``parts`` into model (and optimizer); returns (state, best_state) as load_checkpoint."""
    model.load_state_dict(parts.model, strict=True)
    if optimizer is not None:
        _optimizer_from_parts(optimizer, parts.optimizer, parts.document["optimizer"])
    return {**parts.document["loop"], "epoch": parts.document["epoch"]}, parts.best


def load_checkpoint(
    out_dir: str | Path, model: nn.Module, optimizer: Optimizer | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None] | None:
    """Load the last checkpoint into model (and optimizer); None when out_dir has none.

    Returns (state, best_state): the dict given to save_checkpoint with "epoch" added, and the
    best weights when they were stored apart from the model's (else None).
    """
    parts = read_checkpoint(out_dir)
    return None if parts is None else apply_checkpoint(parts, model, optimizer)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of model.state_dict() on the CPU (sparing accelerator memory) that keeps tied tensors
    as one shared copy; `model.load_state_dict(snapshot)` puts it back."""
    copies: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, tensor in model.state_dict().items():
        key = _view_key(tensor)
        if key not in copies:
            copies[key] = tensor.detach().to("cpu", copy=True)
        out[name] = copies[key]
    return out


def save_tensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """safetensors.save_file that accepts tied tensors (stored once) and any device."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    kept: dict[tuple, str] = {}
    for name, tensor in tensors.items():
        if tensor.is_sparse:
            raise ValueError(f"{name}: sparse tensors cannot be saved; densify them first")
        key = _view_key(tensor)
        if key in kept:
            aliases[name] = kept[key]
            continue
        kept[key] = name
        unique[name] = tensor.detach()
    # Distinct views of one storage (e.g. two halves of a matrix) cannot go to safetensors as
    # they are: give each its own memory. Plain tensors are saved without a copy.
    users: dict[tuple, int] = {}
    for tensor in unique.values():
        users[_storage_key(tensor)] = users.get(_storage_key(tensor), 0) + 1
    unique = {
        name: (t.clone() if users[_storage_key(t)] > 1 else t).contiguous().cpu()
        for name, t in unique.items()
    }
    save_file(unique, str(path), metadata={**(metadata or {}), _ALIASES_KEY: json.dumps(aliases)})
    _fsync_file(path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The dict given to save_tensors (aliases filled in again), on the CPU."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get(_ALIASES_KEY, "{}"))
    tensors = load_file(str(path))
    for name, kept in aliases.items():
        tensors[name] = tensors[kept]
    return tensors


def _read_document(path: Path) -> dict[str, Any]:
    document = json.loads((path / "state.json").read_text())
    if document.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {document.get('format_version')!r} "
                         f"is not {FORMAT_VERSION}")
    return document


# ---- optimizer state: tensors to safetensors, the rest to JSON ----


def _optimizer_to_parts(optimizer: Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    parts = []
    for i, inner in enumerate(getattr(optimizer, "optimizers", [optimizer])):
        state_dict = inner.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for param_id, param_state in state_dict["state"].items():
            for key, value in param_state.items():
                if torch.is_tensor(value):
                    tensors[f"{i}.{param_id}.{key}"] = value
                else:
                    scalars.setdefault(str(param_id), {})[key] = _json_scalar(key, value)
        groups = [{k: _json_scalar(k, v) for k, v in g.items()} for g in state_dict["param_groups"]]
        parts.append({"type": type(inner).__name__, "param_groups": groups, "scalars": scalars})
    return tensors, {"optimizers": parts}


def _optimizer_from_parts(
    optimizer: Optimizer, tensors: dict[str, torch.Tensor], document: dict[str, Any]
) -> None:
    inners = getattr(optimizer, "optimizers", [optimizer])
    saved = document["optimizers"]
    types = [type(inner).__name__ for inner in inners]
    if [part["type"] for part in saved] != types:
        raise ValueError(f"checkpoint optimizer {[p['type'] for p in saved]} is not {types}")
    for i, (inner, part) in enumerate(zip(inners, saved)):
        state: dict[int, dict[str, Any]] = {}
        for param_id, values in part["scalars"].items():
            state.setdefault(int(param_id), {}).update(values)
        for name, tensor in tensors.items():
            index, param_id, key = name.split(".", 2)
            if int(index) == i:
                state.setdefault(int(param_id), {})[key] = tensor
        # JSON turned tuples (Adam's betas) into lists; give the current groups' types back.
        groups = [
            {k: tuple(v) if isinstance(current.get(k), tuple) else v for k, v in group.items()}
            for group, current in zip(part["param_groups"], inner.param_groups)
        ]
        inner.load_state_dict({"state": state, "param_groups": groups})


def _json_scalar(key: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float)) for v in value):
        return list(value)
    raise TypeError(f"optimizer value {key}={value!r} can be saved neither as tensor nor as JSON")


# ---- filesystem helpers ----


def _view_key(tensor: torch.Tensor) -> tuple:
    """Equal keys <=> the same elements of the same memory (a tied parameter seen twice)."""
    if tensor.numel() == 0:
        return ("empty", id(tensor))
    return (*_storage_key(tensor), tensor.dtype, tensor.storage_offset(), tuple(tensor.shape),
            tensor.stride())


def _storage_key(tensor: torch.Tensor) -> tuple:
    if tensor.numel() == 0:
        return ("empty", id(tensor))
    return (str(tensor.device), tensor.untyped_storage().data_ptr())


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the renames inside `path` durable; not possible on every platform, hence best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
