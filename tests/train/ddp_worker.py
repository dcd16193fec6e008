"""One rank of the data-parallel tests (test_distributed.py), started by torchrun:

    torchrun --standalone --nproc_per_node 2 tests/train/ddp_worker.py train OUT_DIR

The tiny world, model and batches are shared with the test, which trains the same model in one
process on whole global batches as the reference.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ytdnn.train import TrainConfig, fit
from ytdnn.train.checkpoint import save_tensors
from ytdnn.train.distributed import current_shard, process_group

NUM_EXAMPLES, NUM_IDS, BAG, NUM_CLASSES = 69, 40, 3, 5
# 69 examples in global batches of 16: the last one, 5, is cut 2 + 3, so the ranks' parts differ
# in size and the per-rank loss scaling is exercised.
CFG = TrainConfig(lr=0.05, batch_size=16, max_epochs=2, grad_clip=1.0, weight_decay=0.01, progress=False)


@dataclasses.dataclass(frozen=True)
class Batch:
    bags: torch.Tensor  # [B, 3] ids of the sparse table, mean-pooled
    ids: torch.Tensor  # [B] ids of the dense table
    labels: torch.Tensor  # [B]

    def __len__(self) -> int:
        return len(self.labels)


def world() -> Batch:
    """Planted answer: the label is the dense id mod 5."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, NUM_IDS, (NUM_EXAMPLES,), generator=g)
    return Batch(torch.randint(0, NUM_IDS, (NUM_EXAMPLES, BAG), generator=g), ids, ids % NUM_CLASSES)


class TwoTables(nn.Module):
    """A sparse table (EmbeddingBag sparse=True: RowAdam, sparse all-reduce), a dense one (Adam)."""

    def __init__(self):
        super().__init__()
        self.sparse = nn.EmbeddingBag(NUM_IDS, 8, mode="mean", sparse=True)
        self.dense = nn.Embedding(NUM_IDS, 8)
        self.out = nn.Linear(16, NUM_CLASSES)
        g = torch.Generator().manual_seed(1)  # the same weights in every process, no global RNG
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def loss(self, batch: Batch) -> torch.Tensor:
        h = torch.cat([self.sparse(batch.bags), self.dense(batch.ids)], dim=1)  # [B, 16]
        return F.cross_entropy(self.out(h), batch.labels)


def train_batches(data: Batch):
    """This process's part of each global batch (current_shard: all of it in one process)."""

    def batches(epoch: int, generator: torch.Generator):
        order = torch.randperm(len(data), generator=generator).numpy()
        for idx in current_shard().cut(order, CFG.batch_size):
            idx = torch.from_numpy(np.ascontiguousarray(idx))
            yield Batch(data.bags[idx], data.ids[idx], data.labels[idx])

    return batches


def train(cfg: TrainConfig = CFG, out_dir=None, validate=None, fail_at_step: int | None = None):
    """(model, history, weights before every step and after the last: [{name: tensor}])."""
    model, data = TwoTables(), world()
    steps = []

    def loss_fn(m: TwoTables, batch: Batch) -> torch.Tensor:
        steps.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        if fail_at_step is not None and len(steps) > fail_at_step:
            raise RuntimeError(f"rank {current_shard().index} fails on purpose")
        return m.loss(batch)

    history = fit(model, cfg, train_batches(data), validate, out_dir=out_dir, loss_fn=loss_fn)
    steps.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return model, history, steps


def flatten(steps: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{i}.{name}": t for i, step in enumerate(steps) for name, t in step.items()}


def main(scenario: str, out: Path) -> None:
    with process_group(timeout=datetime.timedelta(seconds=60)) as shard:
        rank = shard.index
        if scenario == "train":
            # every step's weights; then a checkpointed run for the resume test; then early
            # stopping on a validation that only rank 0 may run
            _, history, steps = train()
            save_tensors(flatten(steps), out / f"steps-{rank}.safetensors")
            train(out_dir=out / "checkpointed")
            calls = []

            def validate(model):
                calls.append(1)
                return {"score": 1.0 / len(calls)}  # best at the first epoch, then worse

            stopped = train(CFG.replace(max_epochs=5, monitor="score", patience=1), validate=validate)[1]
            report = {"world": shard.count, "history": history.to_dict(), "validate_calls": len(calls),
                      "early": stopped.to_dict()}
            (out / f"report-{rank}.json").write_text(json.dumps(report))
            # last, as it ends the job: rank 1 dies at its fourth step, rank 0 must not hang
            train(fail_at_step=3 if rank == 1 else None)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
