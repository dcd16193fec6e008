"""Checkpoints: exact round trips, tied weights stored once, no pickle, crash-safe writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

from ytdnn.train import TrainConfig, checkpoint, make_optimizer
from ytdnn.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_tensors,
    save_checkpoint,
    save_tensors,
    snapshot,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second thread only waits on the first (these tests train outside fit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TiedToy(nn.Module):
    """Input embedding tied to the output layer, plus buffers (BatchNorm running statistics)."""

    def __init__(self, seed: int = 0, sparse: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = nn.Embedding(12, 6, sparse=sparse)
        self.norm = nn.BatchNorm1d(6)
        self.hidden = nn.Linear(6, 6)
        self.output = nn.Linear(6, 12, bias=False)
        self.output.weight = self.embedding.weight  # tied: one [12, 6] table

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.output(torch.relu(self.hidden(self.norm(self.embedding(ids)))))
        return nn.functional.cross_entropy(logits, (ids + 1) % 12)


def train_steps(model: nn.Module, optimizer, steps: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(torch.randint(0, 12, (8,), generator=g)).backward()
        optimizer.step()


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        if torch.is_tensor(value):
            assert torch.equal(value, b[name]), name
        elif isinstance(value, dict):
            assert_same_state(value, b[name])
        else:
            assert value == b[name], name


def optimizer_states(optimizer) -> list[dict]:
    return [o.state_dict() for o in getattr(optimizer, "optimizers", [optimizer])]


@pytest.mark.parametrize("optimizer_name", ["adam", "adagrad"])
def test_round_trip_restores_weights_buffers_and_optimizer_exactly(tmp_path, optimizer_name):
    cfg = TrainConfig(optimizer=optimizer_name, lr=0.05)
    model = TiedToy()
    optimizer = make_optimizer(model, cfg)
    train_steps(model, optimizer, steps=3)
    state = {"step": 3, "history": {"epochs": [{"train_loss": 1.5}]}}
    path = save_checkpoint(tmp_path, 1, model, optimizer, state)

    fresh = TiedToy(seed=1)
    fresh_optimizer = make_optimizer(fresh, cfg)
    loaded, best = load_checkpoint(tmp_path, fresh, fresh_optimizer)
    assert loaded == {**state, "epoch": 1} and best is None
    assert_same_state(model.state_dict(), fresh.state_dict())  # includes BatchNorm buffers
    for a, b in zip(optimizer_states(optimizer), optimizer_states(fresh_optimizer)):
        assert_same_state(a["state"], b["state"])
        assert a["param_groups"] == b["param_groups"]  # Adam's betas come back as a tuple
    assert fresh.output.weight is fresh.embedding.weight  # still tied

    # Both continue identically from here.
    train_steps(model, optimizer, steps=2, seed=1)
    train_steps(fresh, fresh_optimizer, steps=2, seed=1)
    assert_same_state(model.state_dict(), fresh.state_dict())

    # The tied table is stored once; no file needs unpickling.
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    assert "embedding.weight" in stored and "output.weight" not in stored
    names = sorted(p.name for p in path.iterdir())
    assert names == ["model.safetensors", "optimizer.safetensors", "state.json"]


def test_round_trip_of_sparse_adam_with_python_scalar_state(tmp_path):
    cfg = TrainConfig(optimizer="sparse_adam")
    model = TiedToy(sparse=True)
    model.output = nn.Linear(6, 12)  # untie: SparseAdam's table must only get sparse gradients
    optimizer = make_optimizer(model, cfg)
    train_steps(model, optimizer, steps=2)
    save_checkpoint(tmp_path, 1, model, optimizer, {})
    document = json.loads((latest_checkpoint(tmp_path) / "state.json").read_text())
    assert document["optimizer"]["optimizers"][0]["scalars"]["0"]["step"] == 2  # SparseAdam: int

    fresh = TiedToy(seed=3, sparse=True)
    fresh.output = nn.Linear(6, 12)
    fresh_optimizer = make_optimizer(fresh, cfg)
    load_checkpoint(tmp_path, fresh, fresh_optimizer)
    for a, b in zip(optimizer_states(optimizer), optimizer_states(fresh_optimizer), strict=True):
        assert_same_state(a["state"], b["state"])


def test_best_weights_are_stored_apart(tmp_path):
    model = TiedToy()
    best = snapshot(model)
    assert best["output.weight"] is best["embedding.weight"]  # the snapshot keeps the tie
    with torch.no_grad():
        model.hidden.weight.add_(1.0)
    save_checkpoint(tmp_path, 2, model, make_optimizer(model, TrainConfig()), {}, best_state=best)
    _, loaded_best = load_checkpoint(tmp_path, TiedToy(seed=5))
    assert_same_state(best, loaded_best)
    assert not torch.equal(loaded_best["hidden.weight"], model.hidden.weight)


def test_no_checkpoint_gives_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert load_checkpoint(tmp_path, TiedToy()) is None


def test_optimizer_of_another_kind_is_refused(tmp_path):
    model = TiedToy()
    save_checkpoint(tmp_path, 1, model, make_optimizer(model, TrainConfig()), {})
    with pytest.raises(ValueError, match="Adagrad"):
        load_checkpoint(tmp_path, model, make_optimizer(model, TrainConfig(optimizer="adagrad")))


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("failing_file", ["optimizer.safetensors", "state.json", "LATEST"])
def test_interrupted_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch, failing_file):
    model = TiedToy()
    optimizer = make_optimizer(model, TrainConfig())
    save_checkpoint(tmp_path, 1, model, optimizer, {"step": 1})
    epoch_1 = snapshot(model)
    train_steps(model, optimizer, steps=2)

    real_save_file, real_write_text = checkpoint.save_file, checkpoint._write_text

    def save_file(tensors, filename, metadata=None):
        if filename.endswith(failing_file):
            raise Interrupted  # as if the process died while writing this file
        real_save_file(tensors, filename, metadata=metadata)

    def write_text(path, text):
        if path.name.lstrip(".").startswith(failing_file):
            raise Interrupted
        real_write_text(path, text)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    monkeypatch.setattr(checkpoint, "_write_text", write_text)
    with pytest.raises(Interrupted):
        save_checkpoint(tmp_path, 2, model, optimizer, {"step": 3})
    monkeypatch.undo()

    reloaded = TiedToy(seed=8)
    state, _ = load_checkpoint(tmp_path, reloaded, make_optimizer(reloaded, TrainConfig()))
    assert state == {"step": 1, "epoch": 1}
    assert_same_state(epoch_1, reloaded.state_dict())

    # The next successful save publishes itself and clears the debris of the failed one.
    save_checkpoint(tmp_path, 2, model, optimizer, {"step": 3})
    assert load_checkpoint(tmp_path, TiedToy())[0]["epoch"] == 2
    assert len([p for p in (tmp_path / "checkpoint").iterdir() if p.is_dir()]) == 1


def test_save_tensors_with_views_of_one_storage(tmp_path):
    matrix = torch.arange(12.0).reshape(3, 4)
    tensors = {"top": matrix[:1], "rest": matrix[1:], "whole": matrix, "again": matrix,
               "empty": torch.zeros(0)}
    save_tensors(tensors, tmp_path / "t.safetensors")
    loaded = load_tensors(tmp_path / "t.safetensors")
    assert_same_state(tensors, loaded)
    with pytest.raises(ValueError, match="sparse"):
        save_tensors({"s": torch.eye(2).to_sparse()}, tmp_path / "s.safetensors")
