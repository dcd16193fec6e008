"""The training loop on tiny seeded worlds with planted answers (no real models: toy ones here)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ytdnn.train import History, TrainConfig, count_examples, fit, load_checkpoint
from ytdnn.train.batches import to_device

NUM_FEATURES, NUM_CLASSES, NUM_IDS = 8, 4, 24


@dataclasses.dataclass(frozen=True)
class ToyBatch:
    features: torch.Tensor  # [B, 8] float
    ids: torch.Tensor  # [B] long
    labels: torch.Tensor  # [B] long

    def __len__(self) -> int:
        return self.labels.shape[0]


@dataclasses.dataclass(frozen=True)
class World:
    """Planted answers: label = argmax(features @ W) for the dense model, ids % 4 for the sparse."""

    train: ToyBatch
    valid: ToyBatch


def make_world(num_examples: int = 384, seed: int = 0) -> World:
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(NUM_FEATURES, NUM_CLASSES, generator=g)

    def draw(n: int) -> ToyBatch:
        features = torch.randn(n, NUM_FEATURES, generator=g)
        ids = torch.randint(0, NUM_IDS, (n,), generator=g)
        return ToyBatch(features, ids, (features @ weights).argmax(dim=1))

    return World(draw(num_examples), draw(256))


class DenseToy(nn.Module):
    """An MLP on the features; dropout so that training consumes torch's global RNG."""

    def __init__(self, seed: int = 0, dropout: float = 0.1):
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = nn.Linear(NUM_FEATURES, 32)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(32, NUM_CLASSES)

    def forward(self, batch: ToyBatch) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(batch.features))))  # [B, 4]

    def loss(self, batch: ToyBatch) -> torch.Tensor:
        return F.cross_entropy(self(batch), batch.labels)


class SparseToy(nn.Module):
    """A sparse embedding table (SparseAdam / Adagrad rows) under a dense layer; label = id % 4."""

    def __init__(self, seed: int = 0, dropout: float = 0.1):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = nn.Embedding(NUM_IDS, 8, sparse=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(8, NUM_CLASSES)

    def forward(self, batch: ToyBatch) -> torch.Tensor:
        return self.out(self.dropout(self.embedding(batch.ids)))  # [B, 4]

    def loss(self, batch: ToyBatch) -> torch.Tensor:
        return F.cross_entropy(self(batch), batch.ids % NUM_CLASSES)


def batches_of(data: ToyBatch, batch_size: int):
    def train_batches(epoch: int, generator: torch.Generator):
        order = torch.randperm(len(data), generator=generator)
        for rows in order.split(batch_size):
            yield ToyBatch(data.features[rows], data.ids[rows], data.labels[rows])

    return train_batches


def accuracy(model: nn.Module, data: ToyBatch, labels: torch.Tensor) -> float:
    return (model(data).argmax(dim=1) == labels).float().mean().item()


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


def cfg_for(**overrides) -> TrainConfig:
    # One thread: these models are tiny, and threads only wait on each other on a shared machine.
    return TrainConfig(**{"batch_size": 32, "lr": 0.01, "max_epochs": 4, "progress": False,
                          "num_threads": 1, **overrides})


def test_dense_model_learns_planted_pattern():
    world = make_world()
    model = DenseToy()
    cfg = cfg_for(max_epochs=15, lr_schedule="cosine", warmup_steps=5)
    history = fit(model, cfg, batches_of(world.train, cfg.batch_size),
                  validate=lambda m: {"accuracy": accuracy(m, world.valid, world.valid.labels)},
                  num_examples=len(world.train))
    assert len(history.epochs) == 15 and not history.stopped_early
    assert history.train_loss[-1] < history.train_loss[0] / 3
    model.eval()
    assert accuracy(model, world.valid, world.valid.labels) > 0.9  # held-out examples
    assert history.val_metrics[-1]["accuracy"] > 0.9
    assert all(rate > 0 for rate in history.examples_per_second)
    assert history.epochs[-1]["examples"] == len(world.train)
    assert history.epochs[-1]["step"] == 15 * 12  # 384 / 32 = 12 steps per epoch


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")  # torch, for Adagrad
@pytest.mark.parametrize("optimizer", ["sparse_adam", "adagrad"])
def test_sparse_embeddings_learn_with_sparse_optimizers(optimizer):
    world = make_world()
    model = SparseToy()
    table_before = model.embedding.weight.detach().clone()
    cfg = cfg_for(optimizer=optimizer, lr=0.05, max_epochs=10, grad_clip=5.0)
    history = fit(model, cfg, batches_of(world.train, cfg.batch_size))
    assert not torch.equal(model.embedding.weight, table_before)
    assert history.train_loss[-1] < history.train_loss[0] / 2
    model.eval()
    assert accuracy(model, world.valid, world.valid.ids % NUM_CLASSES) == 1.0


def test_adam_refuses_sparse_embeddings():
    with pytest.raises(ValueError, match="sparse_adam"):
        fit(SparseToy(), cfg_for(optimizer="adam"), batches_of(make_world().train, 32))


def test_same_seed_gives_identical_weights():
    world = make_world()
    runs = []
    for seed in (5, 5, 6):
        model = DenseToy(seed=0)
        fit(model, cfg_for(seed=seed, max_epochs=2), batches_of(world.train, 32))
        runs.append(weights(model))
    assert_same_weights(runs[0], runs[1])
    assert not torch.equal(runs[0]["hidden.weight"], runs[2]["hidden.weight"])  # seed matters


class Crash(Exception):
    pass


@pytest.mark.parametrize(("model_class", "optimizer", "restore_best"), [
    (DenseToy, "adam", True), (SparseToy, "sparse_adam", False), (SparseToy, "adagrad", True),
])
def test_resume_after_crash_equals_uninterrupted_run(tmp_path, model_class, optimizer,
                                                     restore_best):
    world = make_world(num_examples=160)
    cfg = cfg_for(optimizer=optimizer, max_epochs=5, lr_schedule="cosine", warmup_steps=3,
                  grad_clip=1.0, seed=3, monitor="accuracy", patience=5, restore_best=restore_best)
    train_batches = batches_of(world.train, cfg.batch_size)

    def validate(model):  # noisy on purpose, so the best epoch is not simply the last
        return {"accuracy": accuracy(model, world.valid, world.valid.labels) + torch.rand(()).item()}

    def run(model, out_dir, batches=train_batches):
        return fit(model, cfg, batches, validate, out_dir=out_dir, num_examples=len(world.train))

    uninterrupted = model_class(seed=1)
    expected = run(uninterrupted, tmp_path / "a")

    def crash_in_epoch_3(epoch, generator):
        for i, batch in enumerate(train_batches(epoch, generator)):
            if epoch == 3 and i == 2:
                raise Crash  # two steps of epoch 3 done: they must not count
            yield batch

    with pytest.raises(Crash):
        run(model_class(seed=1), tmp_path / "b", crash_in_epoch_3)
    resumed = model_class(seed=2)  # other initial weights: everything must come from the checkpoint
    history = run(resumed, tmp_path / "b")

    assert_same_weights(weights(uninterrupted), weights(resumed))
    assert history.train_loss == expected.train_loss
    assert history.val_metrics == expected.val_metrics
    assert (history.best_epoch, history.best_metric) == (expected.best_epoch, expected.best_metric)


def scripted_validate(script: list[float], seen: list[dict[str, torch.Tensor]]):
    """validate() that returns script[epoch] whatever the model, recording the weights it saw."""

    def validate(model):
        seen.append(weights(model))
        return {"NDCG@10": script[len(seen) - 1], "other": 0.0}

    return validate


@pytest.mark.parametrize("mode", ["max", "min"])
def test_early_stopping_stops_after_patience_and_restores_best(tmp_path, mode):
    sign = 1 if mode == "max" else -1
    script = [sign * v for v in (0.1, 0.5, 0.4, 0.45, 0.3, 0.9, 0.95)]
    seen: list[dict[str, torch.Tensor]] = []
    model = DenseToy()
    cfg = cfg_for(monitor="NDCG@10", monitor_mode=mode, patience=3, max_epochs=7)
    history = fit(model, cfg, batches_of(make_world().train, 32),
                  scripted_validate(script, seen), out_dir=tmp_path)
    # best at epoch 1 (0.5); epochs 2, 3, 4 do not beat it -> stop after epoch 4, never see 0.9
    assert len(history.epochs) == 5 and history.stopped_early
    assert (history.best_epoch, history.best_metric) == (1, sign * 0.5)
    assert_same_weights(weights(model), seen[1])

    # A stopped run stays stopped: fit again only reloads it and gives back the best weights.
    again = DenseToy(seed=9)
    history_again = fit(again, cfg, batches_of(make_world().train, 32),
                        scripted_validate(script, []), out_dir=tmp_path)
    assert history_again == history
    assert_same_weights(weights(again), seen[1])


def test_min_delta_ignores_tiny_improvements():
    seen: list[dict[str, torch.Tensor]] = []
    cfg = cfg_for(monitor="NDCG@10", patience=2, min_delta=0.01, max_epochs=5)
    history = fit(DenseToy(), cfg, batches_of(make_world().train, 32),
                  scripted_validate([0.5, 0.505, 0.509, 0.9, 0.9], seen))
    assert history.best_epoch == 0 and history.stopped_early and len(history.epochs) == 3


def test_monitor_missing_from_metrics_is_an_error():
    cfg = cfg_for(monitor="NDCG@10")
    with pytest.raises(ValueError, match="NDCG@10"):
        fit(DenseToy(), cfg, batches_of(make_world().train, 32), lambda m: {"HR@10": 1.0})
    with pytest.raises(ValueError, match="validate"):
        fit(DenseToy(), cfg, batches_of(make_world().train, 32))


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    train_batches = batches_of(make_world(num_examples=64).train, 32)
    fit(DenseToy(), cfg_for(max_epochs=1), train_batches, out_dir=tmp_path)
    with pytest.raises(ValueError, match="lr: 0.01 -> 0.02"):
        fit(DenseToy(), cfg_for(max_epochs=2, lr=0.02), train_batches, out_dir=tmp_path)
    # More epochs is a valid continuation; resume=False starts over.
    assert len(fit(DenseToy(), cfg_for(max_epochs=2), train_batches, out_dir=tmp_path).epochs) == 2
    history = fit(DenseToy(), cfg_for(max_epochs=1, lr=0.02), train_batches, out_dir=tmp_path,
                  resume=False)
    assert len(history.epochs) == 1
    state, _ = load_checkpoint(tmp_path, DenseToy())
    assert state["epoch"] == 1 and state["config"]["lr"] == 0.02


def test_resume_refuses_a_checkpoint_of_other_data_or_another_model(tmp_path):
    import numpy as np

    from ytdnn.train.checkpoint import data_fingerprint

    train_batches = batches_of(make_world(num_examples=64).train, 32)
    key = data_fingerprint(np.arange(5), {"window": 3})
    assert key == data_fingerprint(np.arange(5), {"window": 3})
    assert len({key, data_fingerprint(np.arange(6), {"window": 3}), data_fingerprint(np.arange(5), {"window": 4}),
                data_fingerprint(np.arange(5).astype(np.int32), {"window": 3})}) == 4
    fit(DenseToy(), cfg_for(max_epochs=1), train_batches, out_dir=tmp_path, data_key=key, model_settings={"d": 4})
    with pytest.raises(ValueError, match="trained on other data"):
        fit(DenseToy(), cfg_for(max_epochs=2), train_batches, out_dir=tmp_path, data_key="other", model_settings={"d": 4})
    with pytest.raises(ValueError, match="holds another model \\(d: 4 -> 8\\)"):
        fit(DenseToy(), cfg_for(max_epochs=2), train_batches, out_dir=tmp_path, data_key=key, model_settings={"d": 8})
    history = fit(DenseToy(), cfg_for(max_epochs=2), train_batches, out_dir=tmp_path, data_key=key,
                  model_settings={"d": 4})
    assert len(history.epochs) == 2  # the same data and model: resumed after epoch 1


def test_checkpoint_holds_the_weights_of_the_last_epoch(tmp_path):
    model = DenseToy()
    fit(model, cfg_for(max_epochs=2), batches_of(make_world().train, 32), out_dir=tmp_path)
    reloaded = DenseToy(seed=7)
    state, best = load_checkpoint(tmp_path, reloaded)
    assert_same_weights(weights(model), weights(reloaded))
    assert state["epoch"] == 2 and state["step"] == 24 and best is None
    assert History.from_dict(state["history"]).best_epoch == 1


def test_log_dicts_every_log_every_steps():
    logs: list[dict] = []
    fit(DenseToy(), cfg_for(max_epochs=2, log_every=5), batches_of(make_world().train, 32),
        on_log=logs.append)
    step_logs = [entry for entry in logs if "loss" in entry]
    assert [entry["step"] for entry in step_logs] == [5, 10, 15, 20]  # 12 steps per epoch
    assert set(step_logs[0]) == {"epoch", "step", "loss", "lr", "examples_per_second"}
    assert [entry["epoch"] for entry in logs if "train_loss" in entry] == [0, 1]


def test_tensorboard_scalars_are_written(tmp_path):
    pytest.importorskip("tensorboard")
    fit(DenseToy(), cfg_for(max_epochs=1, log_every=4, tensorboard=True),
        batches_of(make_world(num_examples=128).train, 32), out_dir=tmp_path)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_loss_fn_argument_and_tuple_batches():
    world = make_world()

    def tuple_batches(epoch, generator):
        for rows in torch.randperm(len(world.train), generator=generator).split(64):
            yield world.train.features[rows], world.train.labels[rows]

    model = nn.Linear(NUM_FEATURES, NUM_CLASSES)
    history = fit(model, cfg_for(max_epochs=3, lr=0.05, num_threads=None), tuple_batches,
                  loss_fn=lambda m, batch: F.cross_entropy(m(batch[0]), batch[1]))
    assert history.epochs[0]["examples"] == len(world.train)
    assert history.train_loss[-1] < history.train_loss[0]


def test_non_finite_loss_stops_with_a_clear_error():
    model = nn.Linear(2, 1)
    batches = lambda epoch, g: [torch.ones(4, 2)]
    with pytest.raises(FloatingPointError, match="epoch 0"):
        fit(model, cfg_for(log_every=1), batches, loss_fn=lambda m, x: m(x).sum() * float("nan"))


def test_count_examples():
    @dataclasses.dataclass
    class NoLen:
        ids: torch.Tensor

    class Counted:
        num_examples = 7

    assert count_examples(torch.zeros(5, 3)) == 5
    assert count_examples((torch.zeros(4), torch.zeros(4, 2))) == 4  # not len(tuple) == 2
    assert count_examples({"ids": torch.zeros(3)}) == 3
    assert count_examples(NoLen(torch.zeros(6))) == 6
    assert count_examples(Counted()) == 7
    assert count_examples(ToyBatch(torch.zeros(2, 8), torch.zeros(2), torch.zeros(2))) == 2
    with pytest.raises(TypeError, match="num_examples"):
        count_examples(object())


def test_to_device_moves_nested_tensors_and_keeps_the_rest():
    batch = {"a": (torch.zeros(2), "text"), "b": ToyBatch(torch.zeros(1, 8), torch.zeros(1),
                                                          torch.zeros(1))}
    moved = to_device(batch, torch.device("meta"))
    assert moved["a"][0].device.type == "meta" and moved["a"][1] == "text"
    assert isinstance(moved["b"], ToyBatch) and moved["b"].features.device.type == "meta"


@pytest.mark.parametrize("overrides", [
    {"optimizer": "sgd"}, {"lr": 0.0}, {"lr": float("nan")}, {"weight_decay": -1.0},
    {"lr_schedule": "step"}, {"warmup_steps": -1}, {"min_lr_ratio": 1.5}, {"batch_size": 0},
    {"batch_size": 2.5}, {"max_epochs": 0}, {"max_epochs": True}, {"monitor_mode": "up"},
    {"patience": 0}, {"monitor": ""}, {"grad_clip": 0.0}, {"seed": -1},
    {"log_every": 0}, {"num_threads": 0}, {"progress": "yes"}, {"min_delta": -0.1},
])
def test_bad_config_is_rejected(overrides):
    with pytest.raises(ValueError):
        TrainConfig(**overrides)


def test_patience_without_monitor_is_a_valid_config_and_a_refit_keeps_it():
    # the component picks the metric (the candidate generator carves its own validation split)
    cfg = TrainConfig(patience=3)
    assert cfg.replace(max_epochs=4).patience == 3


def test_config_json_round_trip(tmp_path):
    cfg = TrainConfig(optimizer="sparse_adam", monitor="NDCG@10", patience=3, grad_clip=1.0)
    cfg.save(tmp_path / "train.json")
    assert TrainConfig.load(tmp_path / "train.json") == cfg
    with pytest.raises(ValueError, match="unknown"):
        cfg.replace(learning_rate=0.1)


def test_decaying_schedule_needs_num_examples():
    with pytest.raises(ValueError, match="num_examples"):
        fit(DenseToy(), cfg_for(lr_schedule="cosine"), batches_of(make_world().train, 32))


def test_thread_and_determinism_settings_are_restored():
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    fit(DenseToy(), cfg_for(max_epochs=1, num_threads=1), batches_of(make_world().train, 32))
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
