"""Small matplotlib helpers for the benchmark figures.

Figures are built on ``matplotlib.figure.Figure`` directly, which renders PNGs with the Agg
backend and never touches pyplot's global state (no display is needed, nothing leaks between
figures).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def new_figure(
    num_panels: int = 1, width: float = 5.5, height: float = 4.0
) -> tuple[Figure, list[Axes]]:
    """A figure of ``num_panels`` side-by-side axes."""
    fig = Figure(figsize=(width * num_panels, height), layout="constrained")
    axes = fig.subplots(1, num_panels, squeeze=False)[0]
    return fig, list(axes)


def save(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def line_chart(
    ax: Axes,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    errors: Mapping[str, Sequence[float]] | None = None,
    references: Mapping[str, float] | None = None,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> None:
    """One line per series (with error bars when given); references are dashed horizontals."""
    for name, y in series.items():
        err = None if errors is None else errors.get(name)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, linestyle="--", color=f"C{len(series) + i}", label=name)
    ax.set_xticks(list(x))
    _decorate(ax, xlabel, ylabel, title)


def bar_chart(
    ax: Axes,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    errors: Mapping[str, Sequence[float]] | None = None,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> None:
    """Grouped bars: one group per category, one bar per series."""
    positions = np.arange(len(categories))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        err = None if errors is None else errors.get(name)
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(positions + offset, values, width, yerr=err, capsize=3, label=name)
    labels = [textwrap.fill(c, 16) for c in categories]  # long names wrap instead of colliding
    ax.set_xticks(positions, labels, rotation=20 if len(categories) > 5 else 0)
    _decorate(ax, xlabel, ylabel, title)


def _decorate(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
