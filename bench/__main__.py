"""`python -m bench [--only NAME]`: run the registered benchmarks and write bench/results/<name>.*

Each benchmark is a callable returning a list of ``ytdnn.eval.report.Record``; this runner fills
in the machine and the command, prints the table and writes ``<name>.json`` and ``<name>.md``.
A later benchmark registers itself by adding one line to ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ytdnn.eval.html_report import write_report
from ytdnn.eval.report import Record, format_table, machine_description, write_results


def _lazy(module: str, function: str = "run") -> Callable[[], list[Record]]:
    """Import a benchmark's module only when it runs: one benchmark never pays for another's imports."""

    def run() -> list[Record]:
        return getattr(importlib.import_module(f"bench.{module}"), function)()

    return run


BENCHMARKS: dict[str, Callable[[], list[Record]]] = {
    "baselines": _lazy("baselines"),
    "retrieval": _lazy("retrieval"),
    "index": _lazy("index_speed", "bench_run"),
    "speed": _lazy("speed"),
    "paper": _lazy("paper"),
    "paper_scale": _lazy("paper_scale"),  # fig. 6's depth sweep at 150k-5M watches
    "ranking": _lazy("ranking"),
    "serving": _lazy("serving"),
    "fuzz": _lazy("fuzz"),
    "defaults": _lazy("defaults"),
    "estimator": _lazy("estimator"),
    "export": _lazy("export"),
    "ddp": _lazy("ddp"),
    "scale": _lazy("scale"),  # 1M-20M watches: prepare/score local vs Spark local[2], training from shards
}
# hours to days on 2 cores: run only when named (`make bench ONLY=scale`), never by a plain `make bench`
BY_NAME_ONLY = frozenset({"paper_scale", "scale"})
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def merged(name: str, records: list[Record], out_dir: Path) -> list[Record | dict]:
    """This run's records, plus the earlier ones in <name>.json of other (dataset, protocol, model)."""
    path = out_dir / f"{name}.json"
    if not path.exists():
        return list(records)
    new = {(r.dataset, r.protocol, r.model) for r in records}
    kept = [d for d in json.loads(path.read_text()) if (d["dataset"], d["protocol"], d["model"]) not in new]
    return kept + list(records)


def run_one(name: str, command: str, machine: str, out_dir: Path = RESULTS_DIR, merge: bool = False) -> list[Record]:
    print(f"== benchmark {name} ==", flush=True)
    start = time.perf_counter()
    records = BENCHMARKS[name]()
    for r in records:
        r.machine = r.machine or machine
        r.command = r.command or command
    json_path, md_path = write_results(name, merged(name, records, out_dir) if merge else records, out_dir)
    print(format_table(records))
    print(
        f"{name}: {time.perf_counter() - start:.1f} s; wrote {json_path} and {md_path}\n",
        flush=True,
    )
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", metavar="NAME", help=f"run one benchmark: {', '.join(BENCHMARKS)} "
        f"(without --only: all but {', '.join(sorted(BY_NAME_ONLY))})"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--merge", action="store_true",
                        help="keep earlier records of other datasets/models in the results file")
    args = parser.parse_args(argv)
    if args.only is not None and args.only not in BENCHMARKS:
        parser.error(f"unknown benchmark {args.only!r}; known: {', '.join(BENCHMARKS)}")
    names = [args.only] if args.only else [n for n in BENCHMARKS if n not in BY_NAME_ONLY]
    command = f"make bench ONLY={args.only}" if args.only else "make bench"
    machine = machine_description()
    print(f"machine: {machine}", flush=True)
    for name in names:
        run_one(name, command, machine, args.out, merge=args.merge)
    # the HTML page of every result in the folder, this run's and earlier ones
    print(f"wrote {write_report(args.out, args.out / 'report')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
