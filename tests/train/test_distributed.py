"""Data-parallel training (issue 19): two gloo processes started by the real torchrun train the
model one process trains on the concatenated global batches.

The two-process runs live in ddp_worker.py; each torchrun costs a few seconds of start-up, so
one run covers every step's weights, the checkpoint, resumption and early stopping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_worker import CFG, flatten, train

from ytdnn.samples.sharding import Shard
from ytdnn.train.batches import epoch_seed, private_rng, seed_epoch
from ytdnn.train.checkpoint import latest_checkpoint, load_tensors
from ytdnn.train.distributed import current_shard, is_main, process_group

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(scenario: str, out: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Two ranks of ddp_worker.py under torchrun on this machine, one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               f"--log-dir={out / 'torchrun-logs'}", str(WORKER), scenario, str(out)]  # not /tmp's
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """The run's folder; the run ends with rank 1 dying on purpose (the last test's subject)."""
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun("train", out)
    assert all((out / f"report-{rank}.json").exists() for rank in (0, 1)), done.stderr[-3000:]
    (out / "stderr.txt").write_text(done.stderr)
    (out / "returncode.txt").write_text(str(done.returncode))
    return out


def test_ranks_hold_identical_weights_after_every_step(two_ranks):
    rank0 = load_tensors(two_ranks / "steps-0.safetensors")
    rank1 = load_tensors(two_ranks / "steps-1.safetensors")
    assert rank0.keys() == rank1.keys()
    assert len(rank0) == (2 * 5 + 1) * 4  # before each of 2 x 5 steps, and after: 4 tensors
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def test_two_ranks_equal_one_process_on_the_concatenated_batch(two_ranks):
    """Dense (Adam, weight decay) and sparse (RowAdam) tables within 1e-6, every step, including
    the last step of each epoch, whose 5 examples are split 2 + 3."""
    rank0 = load_tensors(two_ranks / "steps-0.safetensors")
    _, history, steps = train()  # one process, whole global batches
    reference = flatten(steps)
    assert rank0.keys() == reference.keys()
    for name in reference:
        assert torch.allclose(rank0[name], reference[name], atol=1e-6, rtol=0), name
    moved = max(float((steps[-1][k] - steps[0][k]).abs().max()) for k in steps[0])
    assert moved > 0.1  # the comparison is between trained weights, not the initial ones
    report = json.loads((two_ranks / "report-0.json").read_text())
    for ours, theirs in zip(report["history"]["epochs"], history.epochs, strict=True):
        assert ours["examples"] == theirs["examples"] == 69  # global figures on rank 0
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-6)


def test_rank_zero_checkpoints_and_one_process_resumes_it(two_ranks, tmp_path):
    """Resumption with another number of processes: 2 epochs on 2 ranks, then a third in one
    process, equal to 3 epochs in one process."""
    out = two_ranks / "checkpointed"
    assert latest_checkpoint(out).name.startswith("epoch-0002-")
    assert [p.name for p in (out / "checkpoint").iterdir() if p.is_dir()] == [latest_checkpoint(out).name]
    rank0 = load_tensors(two_ranks / "steps-0.safetensors")
    saved = load_tensors(latest_checkpoint(out) / "model.safetensors")
    for name, tensor in saved.items():
        assert torch.equal(tensor, rank0[f"10.{name}"]), name  # the weights after the last step

    three = CFG.replace(max_epochs=3)
    resumed, history, _ = train(three, out_dir=out)
    fresh, _, _ = train(three)
    assert len(history.epochs) == 3
    for (name, a), b in zip(resumed.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name


def test_early_stopping_is_decided_on_rank_zero_for_all(two_ranks):
    reports = [json.loads((two_ranks / f"report-{r}.json").read_text()) for r in (0, 1)]
    assert [r["validate_calls"] for r in reports] == [2, 0]  # rank 0 validates, rank 1 waits
    for report in reports:
        early = report["early"]
        assert early["stopped_early"] and len(early["epochs"]) == 2 and early["best_epoch"] == 0
        assert [e["val"] for e in early["epochs"]] == [{"score": 1.0}, {"score": 0.5}]


def test_a_dying_rank_ends_the_job_with_its_error(two_ranks):
    """The worker's last run: rank 1 raises at its fourth step. torchrun stops rank 0 and the job
    fails naming rank 1's error, instead of rank 0 waiting out its 60 s collective timeout
    (the whole run, four trainings included, is bounded by torchrun()'s 180 s)."""
    assert (two_ranks / "returncode.txt").read_text() != "0"
    stderr = (two_ranks / "stderr.txt").read_text()
    assert "rank 1 fails on purpose" in stderr
    assert "wait timed out" not in stderr.lower() and "timeout" not in stderr.lower()


def test_ranks_draw_their_own_negatives_and_cut_the_same_epoch():
    """Rank 0 draws what one process draws (its runs are unchanged); the others draw apart. The
    shuffling generator is the same on every rank, so all ranks cut the same global batches."""
    assert epoch_seed(3, 1, 1, rank=0) == epoch_seed(3, 1, 1)
    assert len({epoch_seed(3, 1, 1, rank=r) for r in range(4)}) == 4
    with private_rng():
        orders, draws = [], []
        for rank in (0, 1):
            generator = seed_epoch(3, 1, rank=rank)
            orders.append(torch.randperm(10, generator=generator))
            draws.append(torch.rand(3))
    assert torch.equal(orders[0], orders[1]) and not torch.equal(draws[0], draws[1])


def test_shards_partition_each_global_batch():
    order = np.random.default_rng(0).permutation(11)
    parts = [list(Shard(r, 3).cut(order, 4)) for r in range(3)]
    whole = list(Shard().cut(order, 4))
    for b, batch in enumerate(whole):  # 4, 4, 3 examples over 3 ranks
        assert np.array_equal(np.concatenate([p[b] for p in parts]), batch)
    assert [len(p) for p in parts] == [3, 3, 3]
    one = np.arange(5)  # a last batch of 1 leaves ranks 0 and 1 without it: their epoch ends there
    assert [len(list(Shard(r, 3).cut(one, 4))) for r in range(3)] == [1, 1, 2]
    assert Shard(1, 2).files(["a", "b", "c"]) == ["b"]
    with pytest.raises(ValueError, match="shard index"):
        Shard(2, 2)


def test_outside_torchrun_there_is_one_process_and_no_group():
    assert current_shard() == Shard() and is_main()
    with process_group() as shard:
        assert shard == Shard()
