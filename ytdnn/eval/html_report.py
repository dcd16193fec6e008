"""The benchmark report as one self-contained HTML page (``ytdnn report``, ``make bench``).

    write_report("bench/results", "bench/results/report", model_dirs=["models/both"])

The page (``index.html``) holds everything inline and loads nothing: the figures are PNGs in
``data:`` URIs, the style sheet is in the page, there is no script and no web font. It shows

- the paper's figures as the benchmarks drew them: every ``*.png`` of the results folder
  (``paper_fig4.png`` ...), captioned by the heading and notes of the Markdown file beside it;
- table 1: every record with a ``weighted_per_user_loss`` and a ranker ``tower`` (the ranking
  benchmark's ``ranker-*`` rows), beside the paper's figures for the same layers;
- one table per ``*.json`` of records, with the rows of ``report.markdown_table``, followed by the
  peers: the other files' records on the same (dataset, protocol), their model named with their
  file (``EASE (baselines)``), shaded;
- the training curves of the model directories given (``eval.curves``).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ytdnn.eval.curves import curves_png, find_curves
from ytdnn.eval.report import _rows  # the rows of markdown_table: one row logic for every form

ORDER = ("retrieval", "ranking", "serving", "speed", "baselines", "defaults", "estimator", "fuzz",
         "index", "paper")  # the tables' order on the page; other files follow by name
TABLE_1_METRIC = "weighted_per_user_loss"
# Paper table 1 (weighted per-user loss, %) by (tower, use_powers, weighted), and the two
# ablations of the best tower that §4.3 quotes: without x̃² and √x̃ the loss rose by 0.2 points,
# with positives and negatives weighted equally it rose to 38.8%.
PAPER_TABLE_1 = {
    ("none", True, True): ("none", "41.6"),
    ("256", True, True): ("256 ReLU", "36.9"),
    ("512", True, True): ("512 ReLU", "36.7"),
    ("1024", True, True): ("1024 ReLU", "35.8"),
    ("512-256", True, True): ("512 ReLU → 256 ReLU", "35.2"),
    ("1024-512", True, True): ("1024 ReLU → 512 ReLU", "34.7"),
    ("1024-512-256", True, True): ("1024 ReLU → 512 ReLU → 256 ReLU", "34.6"),
    ("1024-512-256", False, True): ("1024 → 512 → 256, without x̃² and √x̃", "34.6 + 0.2"),
    ("1024-512-256", True, False): ("1024 → 512 → 256, positives and negatives weighted equally", "38.8"),
}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 0;
       padding: 0 1.5rem 3rem; color: #1d1d1f; line-height: 1.45; }
p, figcaption { max-width: 75rem; }  /* prose stays readable; wide tables may use the window */
h1 { margin-top: 1.5rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { margin: 1.6rem 0 .4rem; } nav a { margin-right: 1rem; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9rem; } figcaption p { margin: .2rem 0; color: #555; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .8rem; margin: .3rem 0; width: max-content; }
th, td { border: 1px solid #ddd; padding: .2rem .45rem; vertical-align: top; }
th { background: #f3f3f5; text-align: left; max-width: 8rem; }
td { white-space: nowrap; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.long { white-space: normal; min-width: 14rem; max-width: 32rem; color: #444; font-size: .75rem; }
tr.peer td { background: #f6f8fc; font-style: italic; }
.note { font-size: .85rem; color: #555; margin: .3rem 0; }
"""


def write_report(results_dir: str | Path = "bench/results", out_dir: str | Path = "report",
                 model_dirs: Iterable[str | Path] = ()) -> Path:
    """Write ``out_dir/index.html`` from the results folder (and model directories); its path."""
    page = render_report(results_dir, model_dirs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def render_report(results_dir: str | Path, model_dirs: Iterable[str | Path] = ()) -> str:
    """The page's HTML (module docstring)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"{results_dir}: no such results folder")
    results, unread = load_results(results_dir)
    records = [r for file_records in results.values() for r in file_records]
    machines = sorted({r.get("machine", "") for r in records} - {""})
    sections = [("figures", "Figures", _figures(results_dir)),
                ("table-1", "Table 1", _table_1(records)),
                ("benchmarks", "Benchmarks", _benchmarks(results, unread)),
                ("curves", "Training curves", _curves([Path(d) for d in model_dirs]))]
    nav = " ".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "\n".join(f'<section id="{key}">\n<h2>{title}</h2>\n{content}\n</section>'
                     for key, title, content in sections)
    intro = (f"From the {len(results)} record files of <code>{_e(results_dir.name)}/</code>"
             + (f"; measured on {_e('; '.join(machines))}" if machines else "") + ".")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>ytdnn benchmark report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>ytdnn benchmark report</h1>\n<p>{intro}</p>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")


def load_results(results_dir: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """({file stem: records} in page order, {file name: why it is not a list of records})."""
    results, unread = {}, {}
    for path in sorted(results_dir.glob("*.json"), key=_page_order):
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            unread[path.name] = str(err)
            continue
        keys = ("dataset", "protocol", "model")
        if not isinstance(records, list) or not all(isinstance(r, dict) and all(k in r for k in keys)
                                                    for r in records):
            unread[path.name] = "not a list of benchmark records (dataset, protocol, model, ...)"
            continue
        results[path.stem] = records
    return results, unread


def _page_order(path: Path) -> tuple[int, str]:
    return (ORDER.index(path.stem) if path.stem in ORDER else len(ORDER), path.stem)


# ---- sections ----


def _figures(results_dir: Path) -> str:
    """Every PNG of the results folder, inline, captioned by the Markdown file of the same name."""
    parts = []
    for png in sorted(results_dir.glob("*.png")):
        title, notes = _caption(png.with_suffix(".md"), png.stem)
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f'<figure id="fig-{_e(png.stem)}">\n<img src="data:image/png;base64,{data}" '
                     f'alt="{_e(title)}">\n<figcaption><strong>{_e(title)}</strong>'
                     + "".join(f"<p>{_e(n)}</p>" for n in notes) + "</figcaption>\n</figure>")
    return "\n".join(parts) or _note("No figures: <code>make bench ONLY=paper</code> draws them.")


def _caption(md: Path, fallback: str) -> tuple[str, list[str]]:
    """(heading, notes) of a benchmark's Markdown file: its '# ' line and its prose lines."""
    if not md.is_file():
        return fallback, []
    lines = [line.strip() for line in md.read_text(encoding="utf-8").splitlines()]
    title = next((line[2:] for line in lines if line.startswith("# ")), fallback)
    notes = [line for line in lines if line and not line.startswith(("#", "|"))]
    return title, notes


def _table_1(records: list[dict[str, Any]]) -> str:
    """The ranker records of table 1, one column per (dataset, protocol), beside the paper."""
    measured = [r for r in records if TABLE_1_METRIC in (r.get("metrics") or {})
                and "tower" in (r.get("params") or {})]
    if not measured:
        return _note("No ranker records with a weighted per-user loss: <code>make bench "
                     "ONLY=ranking</code> measures them.")
    columns = list(dict.fromkeys((r["dataset"], r["protocol"]) for r in measured))
    values: dict[tuple, dict[tuple, float]] = {}
    for r in measured:
        p = r["params"]
        key = (str(p["tower"]), bool(p.get("use_powers", True)), bool(p.get("weighted", True)))
        values.setdefault(key, {})[(r["dataset"], r["protocol"])] = r["metrics"][TABLE_1_METRIC]
    keys = [k for k in PAPER_TABLE_1 if k in values] + [k for k in values if k not in PAPER_TABLE_1]
    header = ["hidden layers", "paper (YouTube)", *(f"ytdnn: {d} ({p})" for d, p in columns)]
    rows = []
    for key in keys:
        label, paper = PAPER_TABLE_1.get(key, (_layers(key), "–"))
        rows.append([label, paper, *(f"{100 * values[key][c]:.1f}" if c in values[key] else ""
                                     for c in columns)])
    return (_note("Weighted per-user loss, % (paper §4.3): the share of watch time in each page's "
                  "clicked/unclicked pairs that the ranker orders wrongly; lower is better. The paper "
                  "measured YouTube's impressions, ytdnn the records' datasets: compare the order of "
                  "the rows, not the levels.") + _html_table(header, rows))


def _layers(key: tuple[str, bool, bool]) -> str:
    tower, powers, weighted = key
    extras = [text for on, text in ((powers, "without x̃² and √x̃"), (weighted, "unweighted")) if not on]
    return ", ".join([tower.replace("-", " → "), *extras])


def _benchmarks(results: dict[str, list[dict[str, Any]]], unread: dict[str, str]) -> str:
    parts = [_note("One table per record file, rows as in its Markdown table. Shaded rows are the "
                   "peers: the other files' records on the same dataset and protocol.")]
    for name, records in results.items():
        parts.append(f'<h3 id="bench-{_e(name)}">{_e(name)}</h3>\n{_benchmark_table(name, records, results)}')
    parts += [_note(f"<code>{_e(name)}</code> not shown: {_e(why)}") for name, why in unread.items()]
    return "\n".join(parts)


def _benchmark_table(name: str, records: list[dict[str, Any]], results: dict[str, list[dict[str, Any]]]) -> str:
    if not records:
        return _note("no records")
    own = {(r["dataset"], r["protocol"], r["model"]) for r in records}
    splits = {(r["dataset"], r["protocol"]) for r in records if not r.get("skipped")}
    peers = [{**r, "model": f"{r['model']} ({other})"} for other, rs in results.items() if other != name
             for r in rs if (r["dataset"], r["protocol"]) in splits and not r.get("skipped")]
    header, rows = _rows(records + peers)
    peer_rows = {i for i, row in enumerate(rows) if tuple(row[:3]) not in own}
    machines = sorted({r.get("machine", "") for r in records} - {""})
    commands = sorted({r.get("command", "") for r in records} - {""})
    notes = [f"Machine: {m}." for m in machines] + [f"Command: {c}." for c in commands]
    return _html_table(header, rows, peer_rows) + "".join(_note(_e(n)) for n in notes)


def _curves(model_dirs: list[Path]) -> str:
    if not model_dirs:
        return _note("No model directories given (<code>ytdnn report --model DIR</code> adds the "
                     "training curves of DIR's stages, from tb/, metrics.json or the last checkpoint).")
    parts = []
    for model_dir in model_dirs:
        found = find_curves(model_dir)
        if not found:
            parts.append(_note(f"<code>{_e(model_dir)}</code>: no training curves (no tb/, metrics.json "
                               "history or checkpoint)."))
        for c in found:
            stage = model_dir if c.stage == "." else model_dir / c.stage
            data = base64.b64encode(curves_png(c)).decode("ascii")
            title = f"{stage} (from {c.source}, per {c.x_label})"
            parts.append(f'<figure>\n<img src="data:image/png;base64,{data}" alt="{_e(title)}">\n'
                         f"<figcaption><strong>{_e(title)}</strong></figcaption>\n</figure>")
    return "\n".join(parts)


# ---- HTML ----


def _html_table(header: list[str], rows: list[list[str]], shaded: set[int] = frozenset()) -> str:
    long_columns = {i for i, h in enumerate(header) if h in ("seconds", "params")}
    # long metric names ("weighted_per_user_loss") may break after "_": narrower columns
    head = "".join(f"<th>{_e(h).replace('_', '_<wbr>')}</th>" for h in header)
    body = []
    for i, cells in enumerate(rows):
        tds = "".join(f"<td{_cell_class(j, cell, long_columns)}>{_e(cell)}</td>" for j, cell in enumerate(cells))
        body.append(f'<tr class="peer">{tds}</tr>' if i in shaded else f"<tr>{tds}</tr>")
    return (f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(body) + "\n</tbody>\n</table></div>")


def _cell_class(column: int, cell: str, long_columns: set[int]) -> str:
    if column in long_columns:
        return ' class="long"'
    try:
        float(cell)
    except ValueError:
        return ""
    return ' class="num"'


def _note(inner_html: str) -> str:
    return f'<p class="note">{inner_html}</p>'


def _e(value: Any) -> str:
    return html.escape(str(value))
