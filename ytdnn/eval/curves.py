"""Training curves of model directories, read back from what training wrote and drawn as PNG.

A stage directory (a directory under the model directory that holds tb/, metrics.json or
checkpoint/: a candidates model, a ranker, a ranker-bag member) gives its curves from the first
of these it has:

1. tb/: the TensorBoard event files the training loop writes when ``train.tensorboard`` (or
   ``ranker_train.tensorboard``) is on: every logged step, plotted against the step;
2. metrics.json "history" (``ytdnn train candidates`` writes it): one point per epoch;
3. the last checkpoint's history (checkpoint/*/state.json, written whenever training had an
   out_dir): one point per epoch.

The curves are grouped in four panels: loss, validation metrics, examples/s and learning rate.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any

from ytdnn.train import checkpoint

PANELS = ("loss", "validation", "examples/s", "learning rate")
Series = tuple[list[float], list[float]]  # (x, y)


@dataclasses.dataclass
class Curves:
    """The curves of one stage directory.

    stage: its path relative to the model directory given ("." for the directory itself).
    source: "tb/", "metrics.json" or "checkpoint".
    x_label: "step" (TensorBoard) or "epoch" (histories).
    panels: panel name (one of PANELS) -> series name -> (x, y); empty panels are left out.
    """

    stage: str
    source: str
    x_label: str
    panels: dict[str, dict[str, Series]]


def find_curves(model_dir: str | Path) -> list[Curves]:
    """The curves of every stage directory under ``model_dir``, in path order (symlinks not followed)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model directory")
    found = []
    for dirpath, dirnames, _ in os.walk(model_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in ("tb", "checkpoint"))  # read, not walked
        curves = stage_curves(Path(dirpath), Path(dirpath).relative_to(model_dir).as_posix())
        if curves is not None:
            found.append(curves)
    return found


def stage_curves(directory: Path, stage: str) -> Curves | None:
    """The curves of one stage directory from its first source (module docstring), or None."""
    if (directory / "tb").is_dir():
        panels = tensorboard_curves(directory / "tb")
        if panels:
            return Curves(stage, "tb/", "step", panels)
    metrics = directory / "metrics.json"
    if metrics.is_file():
        history = json.loads(metrics.read_text()).get("history")
        if history and history.get("epochs"):
            return Curves(stage, "metrics.json", "epoch", history_curves(history))
    state = checkpoint.checkpoint_state(directory)
    history = ((state or {}).get("loop") or {}).get("history")
    if history and history.get("epochs"):
        return Curves(stage, "checkpoint", "epoch", history_curves(history))
    return None


def _panel(tag: str) -> str | None:
    """The panel of a TensorBoard tag written by the training loop ("train/loss", "val/HR@10")."""
    prefix, _, name = tag.partition("/")
    if prefix == "val":
        return "validation"
    return {"loss": "loss", "train_loss": "loss", "examples_per_second": "examples/s",
            "lr": "learning rate"}.get(name)


def tensorboard_curves(tb_dir: str | Path) -> dict[str, dict[str, Series]]:
    """Panels of every run (a directory of event files) under ``tb_dir``; series are tags, prefixed
    by the run's path when it is not tb_dir itself."""
    # tensorboard is a dependency, but its import is slow: only when a tb/ directory is there
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_dir = Path(tb_dir)
    panels: dict[str, dict[str, Series]] = {}
    runs = sorted({p.parent for p in tb_dir.rglob("events.out.tfevents.*") if p.is_file()})
    for run in runs:
        accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})  # 0: keep every point
        accumulator.Reload()
        prefix = "" if run == tb_dir else f"{run.relative_to(tb_dir).as_posix()}: "
        for tag in sorted(accumulator.Tags()["scalars"]):
            panel = _panel(tag)
            if panel is not None:
                events = accumulator.Scalars(tag)
                panels.setdefault(panel, {})[prefix + tag] = (
                    [float(e.step) for e in events], [float(e.value) for e in events])
    return {name: panels[name] for name in PANELS if name in panels}


def history_curves(history: dict[str, Any]) -> dict[str, dict[str, Series]]:
    """Panels of a training History (``History.to_dict()``), one point per epoch (from 1)."""
    epochs = history["epochs"]
    x = [float(e["epoch"] + 1) for e in epochs]
    panels: dict[str, dict[str, Series]] = {
        "loss": {"train_loss": (x, [e["train_loss"] for e in epochs])},
        "examples/s": {"examples_per_second": (x, [e["examples_per_second"] for e in epochs])},
        "learning rate": {"lr": (x, [e["lr"] for e in epochs])},
    }
    names = [name for e in epochs for name in e.get("val") or {}]
    validation = {}
    for name in dict.fromkeys(names):  # first-seen order, once each
        points = [(xi, e["val"][name]) for xi, e in zip(x, epochs) if name in (e.get("val") or {})]
        validation[name] = ([p[0] for p in points], [p[1] for p in points])
    if validation:
        panels["validation"] = validation
    return {name: panels[name] for name in PANELS if name in panels}


def curves_png(curves: Curves, dpi: int = 100) -> bytes:
    """One PNG: a panel per group of curves, side by side."""
    # Figure, not pyplot: the Agg canvas, no global state, no display needed
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    names = list(curves.panels)
    fig = Figure(figsize=(3.6 * len(names), 2.9), layout="constrained")
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names):
        for label, (x, y) in curves.panels[name].items():
            ax.plot(x, y, marker="o" if len(x) <= 30 else None, markersize=3, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(curves.x_label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs count
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
