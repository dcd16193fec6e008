"""`ytdnn report`: the self-contained HTML page, built from a small results folder written here.

The browser test renders the page in headless Chromium (Debian's `chromium`) and reads the console
and the DOM over the DevTools protocol on a pipe (--remote-debugging-pipe: messages are JSON
separated by NUL bytes on file descriptors 3 and 4), so it needs no package beyond the standard
library; it is skipped only when chromium is not installed.
"""

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser

import pytest
from matplotlib.figure import Figure

from ytdnn.cli import main
from ytdnn.eval.curves import find_curves
from ytdnn.eval.html_report import render_report, write_report
from ytdnn.eval.report import markdown_table

MACHINE = "2 cores, no GPU, CPU: test"
RETRIEVAL = [
    {"benchmark": "retrieval", "dataset": "ds-a", "protocol": "P-TEMPORAL", "model": "ytdnn-candidates",
     "metrics": {"HR@10": 0.1368, "NDCG@10": 0.0683}, "seconds": {"train": 12.5}, "params": {"depth": 3},
     "machine": MACHINE, "command": "make bench ONLY=retrieval"},
    {"benchmark": "retrieval", "dataset": "ds-b", "protocol": "P-RANDOM", "model": "ytdnn-<b>candidates</b>",
     "skipped": "ds-b is absent"},
]
BASELINES = [
    {"benchmark": "baselines", "dataset": "ds-a", "protocol": "P-TEMPORAL", "model": "popularity",
     "metrics": {"HR@10": 0.0498}, "machine": MACHINE},
    {"benchmark": "baselines", "dataset": "ds-a", "protocol": "P-TEMPORAL", "model": "EASE",
     "metrics": {"HR@10": 0.0859, "NDCG@10": 0.0406}, "params": {"l2": 500.0}, "machine": MACHINE},
    {"benchmark": "baselines", "dataset": "ds-c", "protocol": "P-RANDOM", "model": "EASE",
     "metrics": {"Recall@20": 0.2759}, "machine": MACHINE},
]


def ranker_record(model: str, loss: float, tower: str, weighted: bool = True) -> dict:
    return {"benchmark": "ranking", "dataset": "synthetic-small", "protocol": "impressions after the cut",
            "model": model, "metrics": {"weighted_per_user_loss": loss},
            "params": {"tower": tower, "use_powers": True, "weighted": weighted}, "machine": MACHINE}


RANKING = [ranker_record("ranker-none", 0.3971, "none"), ranker_record("ranker-64", 0.3901, "64"),
           ranker_record("ranker-1024-512-256", 0.3819, "1024-512-256"),
           ranker_record("ranker-1024-512-256-unweighted", 0.4058, "1024-512-256", weighted=False)]
HISTORY = {"epochs": [{"epoch": e, "train_loss": 5.0 - e, "examples": 100, "seconds": 1.0,
                       "examples_per_second": 100.0 + e, "lr": 1e-3, "step": 10 * (e + 1),
                       "val": {"HR@10": 0.1 + e / 100}} for e in range(3)],
           "best_epoch": 2, "best_metric": 0.12, "stopped_early": False}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    for name, records in {"retrieval": RETRIEVAL, "baselines": BASELINES, "ranking": RANKING}.items():
        (out / f"{name}.json").write_text(json.dumps(records))
    (out / "broken.json").write_text("{not json")
    fig = Figure(figsize=(2, 1.5))
    fig.subplots().plot([0, 1, 2], [1, 0, 2])
    fig.savefig(out / "paper_fig4.png", dpi=50)
    (out / "paper_fig4.md").write_text("# Fig. 4: fresh items\n\n| a |\n|---|\n| 1 |\n\nWorld: tiny.\n")
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A candidates directory with its metrics.json history, and a ranker/ with TensorBoard scalars."""
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path_factory.mktemp("model")
    (out / "config.json").write_text("{}")
    (out / "metrics.json").write_text(json.dumps({"history": HISTORY}))
    writer = SummaryWriter(log_dir=str(out / "ranker" / "tb"))
    for step in (1, 2, 3):
        writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalar("train/lr", 1e-3, step)
        writer.add_scalar("val/weighted_per_user_loss", 0.4 - step / 100, step)
        writer.add_scalar("epoch/seconds", 1.0, step)  # not a curve of the report
    writer.close()
    return out


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts (header row first), and the <tr> classes."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.row_classes: list[list[str | None]] = []
        self.cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
            self.row_classes.append([])
        elif tag == "tr":
            self.tables[-1].append([])
            self.row_classes[-1].append(dict(attrs).get("class"))
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def markdown_rows(records: list[dict]) -> list[list[str]]:
    """The rows of report.markdown_table, header first, as cell texts."""
    lines = markdown_table(records).splitlines()
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines if not line.startswith("|---")]


def test_table_1_sits_beside_the_papers_numbers(results_dir):
    table_1 = Tables(render_report(results_dir)).tables[0]
    assert table_1[0] == ["hidden layers", "paper (YouTube)", "ytdnn: synthetic-small (impressions after the cut)"]
    assert table_1[1:] == [  # the paper's order; a tower the paper did not try comes last, without a figure
        ["none", "41.6", "39.7"],
        ["1024 ReLU → 512 ReLU → 256 ReLU", "34.6", "38.2"],
        ["1024 → 512 → 256, positives and negatives weighted equally", "38.8", "40.6"],
        ["64", "–", "39.0"],
    ]


def test_each_file_is_its_markdown_table_followed_by_the_peers_on_the_same_splits(results_dir):
    parsed = Tables(render_report(results_dir))
    retrieval, ranking, baselines = parsed.tables[1:]  # page order: retrieval, ranking, baselines
    peers = [{**r, "model": f"{r['model']} (baselines)"} for r in BASELINES[:2]]  # ds-a only
    assert retrieval == markdown_rows(RETRIEVAL + peers)
    assert parsed.row_classes[1] == [None, None, None, "peer", "peer"]
    assert ranking == markdown_rows(RANKING)  # no other file measured its split
    assert baselines == markdown_rows(BASELINES + [{**RETRIEVAL[0], "model": "ytdnn-candidates (retrieval)"}])


def test_the_page_is_self_contained_and_says_what_it_could_not_show(results_dir, model_dir):
    page = render_report(results_dir, [model_dir])
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('<img src="data:image/png;base64,') == 3  # fig. 4 and two stages' curves
    assert "Fig. 4: fresh items" in page and "World: tiny." in page
    assert "ytdnn-&lt;b&gt;candidates&lt;/b&gt;" in page  # record text is escaped, never markup
    assert "<code>broken.json</code> not shown" in page


def test_curves_come_from_tensorboard_or_the_history(model_dir):
    stages = {c.stage: c for c in find_curves(model_dir)}
    assert set(stages) == {".", "ranker"}
    history, tb = stages["."], stages["ranker"]
    assert (history.source, history.x_label, list(history.panels)) == (
        "metrics.json", "epoch", ["loss", "validation", "examples/s", "learning rate"])
    x, y = history.panels["validation"]["HR@10"]
    assert x == [1.0, 2.0, 3.0] and y == pytest.approx([0.1, 0.11, 0.12])
    assert (tb.source, tb.x_label, list(tb.panels)) == ("tb/", "step", ["loss", "validation", "learning rate"])
    x, y = tb.panels["validation"]["val/weighted_per_user_loss"]
    assert x == [1.0, 2.0, 3.0] and y == pytest.approx([0.39, 0.38, 0.37])


def test_cli_report(results_dir, model_dir, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["report", "--out", str(out), str(results_dir), "--model", str(model_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out / 'index.html'}"
    assert (out / "index.html").read_text().count("<table>") == 4
    assert main(["report", "--out", str(out), str(tmp_path / "nothing")]) == 2
    assert "no such results folder" in capsys.readouterr().err


def test_make_bench_writes_the_report_after_the_benchmarks(tmp_path, monkeypatch):
    from bench import __main__ as runner
    from ytdnn.eval.report import Record

    monkeypatch.setitem(runner.BENCHMARKS, "toy", lambda: [Record("toy", "a", "p", "m", {"HR@10": 0.1})])
    runner.main(["--only", "toy", "--out", str(tmp_path)])
    toy = Tables((tmp_path / "report" / "index.html").read_text()).tables
    assert toy == [markdown_rows([Record("toy", "a", "p", "m", {"HR@10": 0.1}).to_dict()])]


# ---- the page in a browser ----


def _above_4(fd: int) -> int:
    """The same pipe end on a descriptor >= 10, so the redirections 3<&X 4>&Y cannot overwrite it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class DevTools:
    """Headless Chromium driven over --remote-debugging-pipe: send commands, collect events."""

    def __init__(self, executable: str, profile: str, timeout: float = 60.0):
        to_browser, self._write = map(_above_4, os.pipe())
        self._read, from_browser = map(_above_4, os.pipe())
        # Chromium reads commands on fd 3 and writes replies on fd 4: bash puts the pipes there
        # (dash rejects descriptors above 9)
        redirect = f'exec "$@" 3<&{to_browser} 4>&{from_browser}'
        self.process = subprocess.Popen(
            ["bash", "-c", redirect, "bash", executable, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self.deadline = time.monotonic() + timeout
        self.events: list[dict] = []
        self._buffer, self._next_id, self.session = b"", 0, None

    def close(self) -> None:
        for fd in (self._write, self._read):
            os.close(fd)
        self.process.terminate()
        self.process.wait(timeout=30)

    def send(self, method: str, **params) -> dict:
        """The result of one command; events that arrive meanwhile go to self.events."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive())
        return next(e for e in self.events if e.get("method") == method)

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)


PAGE_STATE = """(() => ({
  ready: document.readyState,
  title: document.title,
  images: [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, src: i.src.slice(0, 22)})),
  tables: [...document.querySelectorAll("table")].map(t => {
    const before = t.parentElement.previousElementSibling;
    return {name: before.tagName === "H3" ? before.textContent : t.closest("section").id,
            columns: t.tHead.rows[0].cells.length,
            cells: [...t.tBodies[0].rows].map(r => r.cells.length)};
  }),
}))()"""


def console_errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors (e.g. a resource that failed)."""
    errors = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(json.dumps(params["args"]))
        elif method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"]["text"])
    return errors


def test_the_page_renders_in_chromium_with_every_figure_and_table(results_dir, model_dir, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium): the page is not rendered")
    page = write_report(results_dir, tmp_path / "site", [model_dir])
    browser = DevTools(chromium, str(tmp_path / "profile"))
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        browser.session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable")
        browser.send("Page.navigate", url=page.as_uri())
        browser.wait_for("Page.loadEventFired")
        state = browser.send("Runtime.evaluate", expression=PAGE_STATE, returnByValue=True)["result"]["value"]
    finally:
        browser.close()
    # 1) it loads
    assert state["ready"] == "complete" and state["title"] == "ytdnn benchmark report"
    # 2) no console errors, and nothing fetched but the page itself and its data: URIs
    assert console_errors(browser.events) == []
    urls = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert urls and all(url.startswith(("file:", "data:")) for url in urls), urls
    # 3) every figure: fig. 4, the candidates' history and the ranker's TensorBoard curves, decoded
    assert len(state["images"]) == 3
    assert all(i["complete"] and i["width"] > 0 and i["src"] == "data:image/png;base64," for i in state["images"])
    # 4) every table with its rows, each as wide as its header
    rows = {t["name"]: len(t["cells"]) for t in state["tables"]}
    assert rows == {"table-1": 4, "retrieval": 4, "ranking": 4, "baselines": 4}
    assert all(set(t["cells"]) == {t["columns"]} for t in state["tables"])
