"""Benchmark records (DESIGN.md, "Benchmarks") and their JSON / Markdown / terminal forms.

A record is one (dataset, protocol, model) result:

    {"benchmark": "baselines", "dataset": "ml-100k", "protocol": "P-TEMPORAL", "model": "EASE",
     "metrics": {"HR@10": 0.086}, "seconds": {"fit": 1.2, "eval": 0.3}, "params": {"l2": 500.0},
     "machine": "2 cores, no GPU, CPU: ...", "command": "make bench ONLY=baselines"}

A dataset that could not be run is a record too, with ``"skipped": "<why>"`` and no metrics, so
it shows in every report instead of silently missing.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Record:
    benchmark: str
    dataset: str
    protocol: str
    model: str
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    machine: str = ""
    command: str = ""
    skipped: str | None = None  # the reason, when the benchmark could not run on this dataset

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["skipped"] is None:
            del out["skipped"]
        return out


def _as_dict(record: Record | dict[str, Any]) -> dict[str, Any]:
    return record.to_dict() if isinstance(record, Record) else dict(record)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    """E.g. '2 cores, no GPU, CPU: Intel(R) Xeon(R) ...' (cores this process may use)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f"GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return f"{cores} cores, {gpu}, CPU: {_cpu_model()}"


def _fmt(value: Any) -> str:
    """Parameters and timings: 4 significant digits ('500', '5.655', '0.0123')."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _metric(value: Any) -> str:
    """Counts (requests, errors) as integers, rates and scores to 4 decimals."""
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _pairs(values: dict[str, Any]) -> str:
    """'fit=1.2, eval=0.3'; nested values (a validation curve) stay in the JSON only."""
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items() if not isinstance(v, (dict, list)))


def _rows(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per (dataset, protocol, model); metric columns in order of first appearance."""
    metric_names: list[str] = []
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in records:
        key = (r["dataset"], r["protocol"], r["model"])
        row = merged.setdefault(key, {"metrics": {}, "seconds": {}, "params": {}, "skipped": None})
        for name in ("metrics", "seconds", "params"):
            row[name].update(r.get(name) or {})
        row["skipped"] = row["skipped"] or r.get("skipped")
        metric_names += [m for m in r.get("metrics") or {} if m not in metric_names]
    header = ["dataset", "protocol", "model", *metric_names, "seconds", "params"]
    rows = []
    for (dataset, protocol, model), row in merged.items():
        if row["skipped"]:
            cells = ["–"] * len(metric_names) + ["", f"skipped: {row['skipped']}"]
        else:
            cells = [_metric(row["metrics"][m]) if m in row["metrics"] else "" for m in metric_names]
            cells.append(_pairs(row["seconds"]))
            cells.append(_pairs(row["params"]))
        rows.append([dataset, protocol, model, *cells])
    return header, rows


def markdown_table(records: list[Record | dict[str, Any]]) -> str:
    """A GitHub Markdown table of the records: one row per (dataset, protocol, model)."""
    header, rows = _rows([_as_dict(r) for r in records])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def format_table(records: list[Record | dict[str, Any]]) -> str:
    """The same table, aligned in plain text for a terminal."""
    header, rows = _rows([_as_dict(r) for r in records])
    widths = [max(len(c) for c in column) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)]) + "\n"


def write_results(
    benchmark_name: str,
    records: list[Record | dict[str, Any]],
    out_dir: str | Path = "bench/results",
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` (a list of records) and ``<name>.md``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dicts = [_as_dict(r) for r in records]
    json_path, md_path = out_dir / f"{benchmark_name}.json", out_dir / f"{benchmark_name}.md"
    json_path.write_text(json.dumps(dicts, indent=2) + "\n")
    machines = sorted({d.get("machine", "") for d in dicts} - {""})
    commands = sorted({d.get("command", "") for d in dicts} - {""})
    notes = [f"Machine: {m}." for m in machines] + [f"Command: `{c}`." for c in commands]
    md_path.write_text(
        f"# {benchmark_name}\n\n" + markdown_table(dicts) + "\n" + "\n".join(notes) + "\n"
    )
    return json_path, md_path
