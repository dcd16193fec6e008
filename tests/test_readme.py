"""Every block of README.md runs, on tiny data written here (issue 14).

The test reads README.md's fenced blocks itself, so a block added to the README runs here too: a
``sh``/``bash`` or ``python`` block is run, or its command is in EXEMPT with the reason; any other
block fails the test. Shell commands run first, one by one in README order, in one working
directory where ``path/to`` holds tiny MovieLens directories in their real layouts; ``make X``
runs the Makefile's own recipe (``make -n``), ``ytdnn serve`` starts the real server on a free
loopback port for the ``curl`` lines after it. Then the Python blocks run in README order in one
interpreter, as the README says they continue one another. Values that would be slow on the
real README settings are shrunk by SHELL_SIZES / PYTHON_SIZES, each entry with its reason; the
commands themselves (subcommands, flags, ``--set`` keys) run as written, and an entry that no
longer matches the README fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from movielens_files import write_movielens_root

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHELL_LANGUAGES = ("sh", "bash", "shell")
MAKE_STAMP = ".readme-test-stamp"  # the install stamp is taken as done: the test runs in the venv

EXEMPT = {  # README command -> why it is not run here
    "make test": "CI's own command: the suite cannot run itself from inside itself",
    "make bench": "every benchmark, hours on 2 cores; `make bench ONLY=baselines` runs the same "
                  "runner here on the tiny MovieLens files",
    ".venv/bin/torchrun --standalone --nproc-per-node 2 -m ytdnn train candidates --data data/small "
    "--out models/cand-ddp": "what the `--nproc 2` line before it starts (ytdnn/cli.py), run there",
    ".venv/bin/torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint host1:29400 "
    "--rdzv-id cand -m ytdnn train candidates --data data/small --out models/cand-ddp": "needs two machines",
    ".venv/bin/ytdnn prepare --engine spark --data data/small --out prepared/small-spark":
        "a Spark session costs ~30 s: tests/scale/test_spark_engine.py runs this engine in the suite's one session",
    ".venv/bin/ytdnn score --engine spark --spark-master spark://host1:7077 --model /shared/models/both "
    "--what users --out /shared/scores/users": "needs a Spark cluster; tests/scale/test_spark_engine.py runs it on local[2]",
    "PYSPARK_PYTHON=/opt/ytdnn/.venv/bin/python /opt/ytdnn/.venv/bin/ytdnn prepare --engine spark --spark-master "
    "spark://host1:7077 --data /shared/logs/2026-11 --out /shared/prepared/2026-11":
        "needs a Spark standalone cluster; tests/scale/test_spark_engine.py runs this engine on local[2]",
    "'PYSPARK_SUBMIT_ARGS=--archives ytdnn-env.tar.gz#env --conf spark.executor.memory=8g --conf "
    "spark.executor.cores=4 pyspark-shell' PYSPARK_PYTHON=./env/bin/python ytdnn score --engine spark "
    "--spark-master yarn --model /shared/models/both --what recommendations --out /shared/scores/recs":
        "needs a YARN cluster; tests/scale/test_spark_engine.py runs this engine on local[2]",
}
TINY_BOTH = "--set depth=0 --set train.max_epochs=1 --set ranker.tower=64 --set ranker_train.max_epochs=1"
SHELL_SIZES = [  # (README text, what runs, why)
    ("--preset small", "--preset tiny", "small: 250k watches; tiny: 5k, in under a second"),
    ("-m ytdnn demo", "-m ytdnn demo --preset tiny", "`make demo`: the small world takes minutes"),
    ("--set depth=3", "--set depth=0", "the tower's 1024-512-256 costs seconds on tiny data"),
    ("--set train.max_epochs=5", "--set train.max_epochs=1", "one epoch shows the command works"),
    ("--set num_negatives=4096", "--set num_negatives=64", "300 items: 64 keeps it sampled"),
    ("--set ranker.tower=256", "--set ranker.tower=256 --set ranker_train.max_epochs=1",
     "the ranker's default: 10 epochs"),
    ("--protocol global-time --out", "--protocol global-time --set depth=0 --set train.max_epochs=2 --out",
     "the default tower and up to 30 epochs take minutes even on the tiny world"),
    ("--out models/both", f"--out models/both {TINY_BOTH}", "both stages' defaults: 10 epochs"),
    ("--out models/blend", f"--out models/blend {TINY_BOTH}", "both stages' defaults: 10 epochs"),
    ("-m bench ", "-m bench --out bench/results ", "not the repository's bench/results/"),
    ("--port 8000", "--port {port}", "a free loopback port"),
    ("localhost:8000", "localhost:{port}", "the same port"),
]
PYTHON_SIZES = [  # (README text, what runs, why)
    ("hidden_units=[1024, 512, 256], n_classes=10000, epochs=20", "hidden_units=[32], n_classes=10000, epochs=1",
     "the paper's tower and 20 epochs take minutes; one small epoch shows the flow works"),
    ("max_epochs=10", "max_epochs=1", "one epoch shows the code works"),
    ("max_epochs=3", "max_epochs=1", "one epoch shows the code works"),
    ('"ranker_train.max_epochs": 3', '"ranker_train.max_epochs": 1', "one epoch shows the code works"),
    ("embedding_dim=256, depth=3", "embedding_dim=32, depth=1", "a tiny model on the tiny world"),
    ("num_negatives=4096", "num_negatives=64", "the tiny corpus has 300 items"),
    ('tower="1024-512-256"', 'tower="64"', "table 1's widest ranker: most of the time here"),
    ('"ranker.tower": "1024-512-256"', '"ranker.tower": "64"', "the same"),
]
EXPECTED = {  # ytdnn subcommand -> pattern its output must match
    "data synth": r"wrote [\d,]+ watches, [\d,]+ searches, [\d,]+ impressions",
    "data movielens": r"wrote 40 watches, 8 users, 10 items",  # write_movielens_root's log
    "data validate": r": valid \(40 watches",
    "train candidates": r"trained 1 epochs .* model written to",
    "train ranker": r"trained the ranker 1 epochs",
    "train all": r"model written to models/\w+",
    "retrieve": r"^ +1 +\d+ ",
    "recommend": r"^ +1 +\d+ +[-\d.]+ +(ranker|candidates|popular)",
    "demo": r"ytdnn serve --model",
    "evaluate": r"GLOBAL-TIME +ytdnn ",
    "config show": r"ranker\.tower +\"",
}
PYTHON_CHECKS = [  # expressions true after the README's Python blocks have run
    "world.dataset.watches.num_rows > 0 and tables.watches.num_rows > 0",
    "[len(i) for i in items] == [len(s) for s in scores] == [100, 100]",
    "len(top.item_ids) == 10 and set(top.stages) <= {'ranker', 'candidates', 'popular'}",
    "0 <= figures['HR@10'] <= figures['HR@100'] <= 1",
    "0 < rmse < 5 and isinstance(again, YouTubeDNN)",
    "cooc_ids.shape == cooc_scores.shape == (2, 10)",
]


@dataclass(frozen=True)
class Block:
    language: str
    line: int  # README line of the first line of the block's body
    source: str


@dataclass(frozen=True)
class Command:
    line: int
    text: str  # continuations joined, comments dropped, quoted as the shell reads it


def fenced_blocks(markdown: str) -> list[Block]:
    """The ``` fenced blocks of a Markdown text (the README's are never nested or indented)."""
    blocks, open_fence, body = [], None, []
    for number, line in enumerate(markdown.splitlines(), 1):
        if open_fence is None and line.startswith("```"):
            open_fence, body, start = line[3:].strip(), [], number + 1
        elif open_fence is not None and line.strip() == "```":
            blocks.append(Block(open_fence, start, "\n".join(body) + "\n"))
            open_fence = None
        elif open_fence is not None:
            body.append(line)
    assert open_fence is None, "README.md: a fenced block is never closed"
    return blocks


def shell_commands(block: Block) -> list[Command]:
    """One Command per shell command: `\\` continuations joined, `# comments` dropped."""
    commands, pending, start = [], "", block.line
    for offset, line in enumerate(block.source.splitlines()):
        if not pending:
            start = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        argv = shlex.split(pending + line, comments=True)
        pending = ""
        if argv:
            commands.append(Command(start, shlex.join(argv)))
    assert not pending, f"README.md:{start}: a command ends in a continuation"
    return commands


def make_recipe(text: str) -> list[str]:
    """`make X VAR=v` -> the commands the Makefile runs for it (the install step taken as done)."""
    argv = shlex.split(text)
    out = subprocess.run(
        ["make", "-C", str(REPO), "-n", "--no-print-directory", "-o", MAKE_STAMP, *argv[1:],
         "PY=python", f"STAMP={MAKE_STAMP}", f"BENCH_STAMP={MAKE_STAMP}"],
        capture_output=True, text=True, check=True,
    ).stdout
    own = re.compile(r"make(\[\d+\])?: ")  # make's own messages ("Nothing to be done for ...")
    lines = [line for line in out.splitlines() if line.strip() and not own.match(line)]
    return [shlex.join(shlex.split(line)) for line in lines]


def substitute(text: str, table: list[tuple[str, str, str]], used: set[str], **values) -> str:
    for old, new, _ in table:
        if old in text:
            text = text.replace(old, new.format(**values))
            used.add(old)
    return text


def python_form(text: str) -> str:
    """`.venv/bin/ytdnn ...` -> `python -m ytdnn ...`, the form make's recipes have too."""
    text = re.sub(r"^\.venv/bin/ytdnn(?=\s|$)", "python -m ytdnn", text)
    return re.sub(r"^\.venv/bin/python(?=\s|$)", "python", text)


def argv_of(text: str) -> list[str]:
    """Command text -> argv: `python` is this interpreter, curl fails on an HTTP error."""
    argv = shlex.split(text)
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    if argv[0] == "curl":
        return ["curl", "--fail", "--silent", "--show-error", "--max-time", "60", *argv[1:]]
    return argv


def ytdnn_subcommand(argv: list[str]) -> str | None:
    if argv[1:3] != ["-m", "ytdnn"]:
        return None
    words = [w for w in argv[3:5] if not w.startswith("-")]
    if not words:
        return None
    return " ".join(words[:2]) if words[0] in ("data", "train", "config") else words[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_blocks() -> list[Block]:
    return fenced_blocks(README.read_text())


# ---- the parser and the coverage of the README -------------------------------------------------


def test_shell_commands_join_continuations_and_drop_comments():
    block = Block("sh", 10, "# a comment line\n\nmake demo   # runs it\nytdnn train --set a=1 \\\n"
                            "    --set 'q=x # y'  # why\ncurl -d '{\"k\": 1}' host\n")
    assert shell_commands(block) == [
        Command(12, "make demo"),
        Command(13, "ytdnn train --set a=1 --set 'q=x # y'"),
        Command(15, "curl -d '{\"k\": 1}' host"),
    ]


def test_fenced_blocks_keep_language_line_and_body():
    text = "intro\n```sh\nls\n```\ntext\n```python\nx = 1\n\ny = 2\n```\n"
    assert fenced_blocks(text) == [Block("sh", 3, "ls\n"), Block("python", 7, "x = 1\n\ny = 2\n")]


def test_every_readme_block_is_run_or_exempted():
    blocks = readme_blocks()
    unknown = [f"README.md:{b.line} ({b.language or 'no language'})" for b in blocks
               if b.language not in (*SHELL_LANGUAGES, "python")]
    assert not unknown, f"blocks this test cannot run; give them a language it runs: {unknown}"
    commands = {c.text for b in blocks if b.language in SHELL_LANGUAGES for c in shell_commands(b)}
    stale = set(EXEMPT) - commands
    assert not stale, f"EXEMPT names commands no longer in the README: {stale}"
    assert any(b.language == "python" for b in blocks) and len(commands) > len(EXEMPT)


# ---- running the blocks ------------------------------------------------------------------------


@dataclass
class Workdir:
    path: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Workdir:
    path = tmp_path_factory.mktemp("readme")
    write_movielens_root(path / "path" / "to")
    env = {k: v for k, v in os.environ.items() if k != "YTDNN_ADMIN_TOKEN"}  # admin: loopback
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # bench/
    env["YTDNN_MOVIELENS"] = str(path / "path" / "to")  # the same layout as the README's path/to
    env["TQDM_DISABLE"] = "1"
    (path / "tmp").mkdir()
    env["TMPDIR"] = str(path / "tmp")  # what the commands leave behind there is checked
    return Workdir(path, env)


def run(argv: list[str], where: str, workdir: Workdir, timeout: float = 300) -> str:
    done = subprocess.run(argv, cwd=workdir.path, env=workdir.env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    output = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, f"{where}: {shlex.join(argv)} exited {done.returncode}:\n{output}"
    return done.stdout


class Server:
    """`ytdnn serve` in a subprocess; started on its README line, stopped at the end."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.log: Path | None = None

    def start(self, argv: list[str], port: int, where: str, workdir: Workdir) -> None:
        assert self.process is None, f"{where}: a second `ytdnn serve` while one is running"
        self.log = workdir.path / f"serve-{port}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(argv, cwd=workdir.path, env=workdir.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            exited = self.process.poll() is not None
            assert not exited, f"{where}: the server exited:\n{self.log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise AssertionError(f"{where}: the server did not answer /health in 120 s")

    def stop(self) -> None:
        """Ctrl+C, then the server's log must hold no traceback."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown, as Ctrl+C
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            log = self.log.read_text()
            assert "Traceback" not in log, f"the server logged an error:\n{log[-3000:]}"
        self.process = None


def check_output(where: str, argv: list[str], stdout: str, watched: dict[str, set]) -> None:
    """The cheap checks: each ytdnn command's expected line; every curl answer is JSON, and a
    recommendation never holds an item the README posted as watched by that user."""
    sub = ytdnn_subcommand(argv)
    if sub in EXPECTED:
        found = re.search(EXPECTED[sub], stdout, re.MULTILINE)
        assert found, f"{where}: {sub} printed:\n{stdout[-2000:]}"
    if argv[0] != "curl":
        return
    answer = json.loads(stdout)
    if "-d" in argv and "/events" in " ".join(argv):
        event = json.loads(argv[argv.index("-d") + 1])
        watched.setdefault(str(event["user_id"]), set()).add(event["item_id"])
    url = next((a for a in argv if "/recommend/" in a), None)
    if url:
        user, k = re.search(r"/recommend/([^?]+)\?k=(\d+)", url).groups()
        items = [i["item_id"] for i in answer["items"]]
        assert len(items) == int(k), f"{where}: {len(items)} items for k={k}"
        assert not watched.get(user, set()) & set(items), f"{where}: a watched item came back"


@pytest.fixture(scope="module")
def shell_phase(workdir) -> set[str]:
    """Run every README shell command in order; the SHELL_SIZES entries that matched."""
    used: set[str] = set()
    server, port, watched = Server(), free_port(), {}
    try:
        for block in readme_blocks():
            if block.language not in SHELL_LANGUAGES:
                continue
            for command in shell_commands(block):
                if command.text in EXEMPT:
                    continue
                where = f"README.md:{command.line} `{command.text}`"
                is_make = command.text.startswith("make ")
                for text in make_recipe(command.text) if is_make else [command.text]:
                    argv = argv_of(substitute(python_form(text), SHELL_SIZES, used, port=port))
                    if ytdnn_subcommand(argv) == "serve":
                        server.start(argv, port, where, workdir)
                        continue
                    assert argv[0] != "curl" or server.process, f"{where}: no server runs"
                    check_output(where, argv, run(argv, where, workdir), watched)
    finally:
        server.stop()
    return used


def test_readme_shell_commands_run(shell_phase, workdir):
    assert shell_phase == {old for old, _, _ in SHELL_SIZES}, "SHELL_SIZES entries not in README"
    records = json.loads((workdir.path / "bench" / "results" / "baselines.json").read_text())
    assert records and not any(r.get("skipped") for r in records)  # ran on the tiny MovieLens files
    # `--nproc 2` starts torchrun, whose per-rank log folder must not outlive the job
    assert not list((workdir.path / "tmp").glob("torchelastic_*"))
    # `--set cooc.window=20` reached the co-occurrence source the blended model serves
    cooc = json.loads((workdir.path / "models" / "blend" / "sources" / "cooc" / "config.json").read_text())
    assert cooc["config"]["window"] == 20


RUNNER = """\
import json, sys
namespace = {"__name__": "__main__"}
readme, blocks, checks = json.load(open(sys.argv[1]))
for line, source in blocks:
    print(f"README.md:{line}", flush=True)
    # padded so that a traceback names README.md and the line as it stands there
    exec(compile("\\n" * (line - 1) + source, readme, "exec"), namespace)
for check in checks:
    assert eval(check, namespace), f"after the README's Python blocks, not true: {check}"
print("README python: ok")
"""


def test_readme_python_blocks_run(shell_phase, workdir):
    used: set[str] = set()
    blocks = [(b.line, substitute(b.source, PYTHON_SIZES, used)) for b in readme_blocks()
              if b.language == "python"]
    assert used == {old for old, _, _ in PYTHON_SIZES}, "PYTHON_SIZES entries no longer in README"
    (workdir.path / "blocks.json").write_text(json.dumps([str(README), blocks, PYTHON_CHECKS]))
    (workdir.path / "run_blocks.py").write_text(RUNNER)
    out = run([sys.executable, "run_blocks.py", "blocks.json"], "README.md python blocks", workdir)
    assert out.rstrip().endswith("README python: ok")
