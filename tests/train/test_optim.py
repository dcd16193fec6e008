"""Learning-rate schedule values, gradient clipping and optimizer choice, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ytdnn.train import MultiOptimizer, TrainConfig, clip_grad_norm, learning_rate, make_optimizer
from ytdnn.train.optim import RowAdam


@pytest.mark.parametrize(("schedule", "min_lr_ratio", "expected"), [
    # lr 1, 2 warmup steps, 10 steps in all: steps 0, 1 ramp to 0.5, 1.0; then p = (step - 2) / 8
    ("constant", 0.0, {0: 0.5, 1: 1.0, 2: 1.0, 6: 1.0, 10: 1.0}),
    # linear: 1 - p -> step 6: p = 0.5 -> 0.5; step 8: p = 0.75 -> 0.25; step 10 (and past): 0
    ("linear_decay", 0.0, {0: 0.5, 1: 1.0, 2: 1.0, 6: 0.5, 8: 0.25, 10: 0.0, 13: 0.0}),
    # cosine: (1 + cos(pi p)) / 2 -> step 4: p = 0.25 -> (1 + 0.7071) / 2 = 0.8536; step 6: 0.5
    ("cosine", 0.0, {2: 1.0, 4: (1 + math.sqrt(0.5)) / 2, 6: 0.5, 10: 0.0}),
    # floor 0.1: 0.1 + 0.9 * 0.5 = 0.55 halfway, 0.1 at the end
    ("cosine", 0.1, {6: 0.55, 10: 0.1}),
    ("linear_decay", 0.2, {6: 0.6, 10: 0.2}),
])
def test_learning_rate_at_given_steps(schedule, min_lr_ratio, expected):
    cfg = TrainConfig(lr=1.0, lr_schedule=schedule, warmup_steps=2, min_lr_ratio=min_lr_ratio)
    for step, lr in expected.items():
        assert learning_rate(cfg, step, total_steps=10) == pytest.approx(lr, abs=1e-12), step


def test_learning_rate_without_warmup_starts_at_lr():
    cfg = TrainConfig(lr=0.3, lr_schedule="linear_decay")
    assert learning_rate(cfg, 0, total_steps=4) == pytest.approx(0.3)
    assert learning_rate(cfg, 2, total_steps=4) == pytest.approx(0.15)


def test_clip_dense_gradients_to_max_norm():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])  # global norm 5
    assert clip_grad_norm([a, b], max_norm=1.0) == pytest.approx(5.0)
    assert torch.allclose(torch.cat([a.grad, b.grad]), torch.tensor([0.6, 0.8]), atol=1e-6)
    assert clip_grad_norm([a, b], max_norm=10.0) == pytest.approx(1.0, abs=1e-5)  # no change
    assert torch.allclose(torch.cat([a.grad, b.grad]), torch.tensor([0.6, 0.8]), atol=1e-6)


def test_clip_sparse_gradient_sums_repeated_rows_first():
    table = nn.Parameter(torch.zeros(4, 2))
    # row 1 hit twice: (1, 0) + (2, 0) = (3, 0); row 2: (0, 4) -> norm 5, not sqrt(1 + 4 + 16)
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 1, 2]]),
                                         torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 4.0]]), (4, 2))
    assert clip_grad_norm([table], max_norm=1.0) == pytest.approx(5.0)
    expected = torch.tensor([[0.0, 0.0], [0.6, 0.0], [0.0, 0.8], [0.0, 0.0]])
    assert torch.allclose(table.grad.to_dense(), expected, atol=1e-6)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.items = nn.Embedding(10, 4, sparse=True)
        self.tied = self.items  # one table reached twice must be optimized once
        self.dense = nn.Linear(4, 1)


def test_sparse_adam_splits_sparse_tables_from_dense_layers():
    model = Mixed()
    optimizer = make_optimizer(model, TrainConfig(optimizer="sparse_adam", weight_decay=0.01))
    assert isinstance(optimizer, MultiOptimizer)
    sparse, dense = optimizer.optimizers
    assert isinstance(sparse, RowAdam) and isinstance(dense, torch.optim.Adam)
    assert sparse.param_groups[0]["params"] == [model.items.weight]
    assert dense.param_groups[0]["params"] == [model.dense.weight, model.dense.bias]
    assert dense.param_groups[0]["weight_decay"] == 0.01
    # one step updates only the looked-up rows of the table
    before = model.items.weight.detach().clone()
    model.dense(model.items(torch.tensor([2, 5]))).sum().backward()
    optimizer.step()
    changed = (model.items.weight != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [2, 5]


def test_optimizer_choices_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="sparse=True"):
        make_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="sparse_adam"))
    with pytest.raises(ValueError, match="weight_decay"):
        make_optimizer(Mixed(), TrainConfig(optimizer="adagrad", weight_decay=0.1))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        make_optimizer(frozen, TrainConfig())


def test_row_adam_is_adam_on_the_rows_a_step_touches_and_leaves_the_rest():
    torch.manual_seed(0)
    start = torch.randn(6, 3)
    lazy, dense = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    row_adam, adam = RowAdam([lazy], lr=0.1), torch.optim.Adam([dense], lr=0.1)
    rows = torch.tensor([[4, 1, 4]])  # row 4 twice: its gradients add up, as in a dense gradient
    for step in range(3):
        values = torch.randn(3, 3)
        lazy.grad = torch.sparse_coo_tensor(rows, values, (6, 3))
        dense.grad = lazy.grad.to_dense()
        row_adam.step()
        adam.step()
    touched = [1, 4]
    torch.testing.assert_close(lazy.data[touched], dense.data[touched], rtol=0, atol=1e-6)
    untouched = [0, 2, 3, 5]
    assert torch.equal(lazy.data[untouched], start[untouched])  # dense Adam would not move them either
    assert row_adam.state[lazy]["step"] == 3
    # a row seen only later starts its moments from zero, with the table's step count
    lazy.grad = torch.sparse_coo_tensor(torch.tensor([[0]]), torch.ones(1, 3), (6, 3))
    row_adam.step()
    assert torch.all(lazy.data[0] < start[0])


def test_auto_optimizer_is_row_adam_on_sparse_tables_and_adam_otherwise():
    auto = TrainConfig()
    assert auto.optimizer == "auto"
    optimizer = make_optimizer(Mixed(), auto)
    assert isinstance(optimizer, MultiOptimizer)
    assert [type(o) for o in optimizer.optimizers] == [RowAdam, torch.optim.Adam]
    assert type(make_optimizer(nn.Linear(2, 2), auto)) is torch.optim.Adam
