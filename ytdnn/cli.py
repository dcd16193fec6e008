"""The `ytdnn` command: thin subcommands that parse flags and call one library function each."""

from __future__ import annotations

import argparse
import faulthandler
import functools
import json
import os
import shutil
import sys
import warnings
from pathlib import Path


def _data_synth(args: argparse.Namespace) -> int:
    from ytdnn.data.synthetic import WorldConfig, generate

    overrides = {"seed": args.seed} if args.seed is not None else {}
    config = WorldConfig.preset(args.preset, **overrides)
    if args.chunked or args.preset.startswith("scale-"):  # those do not fit in memory at once
        from ytdnn.data.synthetic_chunked import generate_to

        counts = ", ".join(f"{n:,} {name}" for name, n in generate_to(config, args.out).items())
        print(f"wrote {counts} to {args.out}")
        return 0
    world = generate(config)
    world.save(args.out)
    counts = ", ".join(f"{len(t):,} {name}" for name, t in world.dataset.tables().items())
    print(f"wrote {counts} to {args.out}")
    return 0


def _data_movielens(args: argparse.Namespace) -> int:
    from ytdnn.data.movielens import read_movielens, read_movielens_folds

    if args.folds:
        dataset = read_movielens_folds(args.folds, meta_dir=args.path, skip_bad_rows=args.skip_bad_rows)
    else:
        dataset = read_movielens(args.path, skip_bad_rows=args.skip_bad_rows)
    dataset.save(args.out)
    counts = ", ".join(f"{len(t):,} {name}" for name, t in dataset.tables().items())
    print(f"wrote {counts} to {args.out}")
    return 0


def _data_movies_dataset(args: argparse.Namespace) -> int:
    from ytdnn.data.movies_dataset import read_movies_dataset

    dataset = read_movies_dataset(args.path, ratings=args.ratings, skip_bad_rows=args.skip_bad_rows)
    dataset.save(args.out)
    counts = ", ".join(f"{len(t):,} {name}" for name, t in dataset.tables().items())
    print(f"wrote {counts} to {args.out}")
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from ytdnn.data.schema import Dataset

    dataset = Dataset.load(args.path)
    counts = ", ".join(f"{len(t):,} {name}" for name, t in dataset.tables().items())
    print(f"{args.path}: valid ({counts})")
    return 0


def _parse_overrides(pairs: list[str]) -> dict[str, str]:
    """["depth=2", "ranker.tower=256"] -> {"depth": "2", "ranker.tower": "256"}: the text of each
    value. The configuration parses it by the setting's declared type
    (``TwoStageConfig.with_settings``): only it knows that the ranker's ``tower=256`` is a string.
    """
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key] = value
    return out


def _settings(args: argparse.Namespace):
    """The TwoStageConfig of ``--config FILE`` (default: the defaults), then every ``--set``."""
    from ytdnn.configuration import TwoStageConfig

    config = TwoStageConfig.load(args.config) if args.config else TwoStageConfig()
    shortcuts = {"pipeline.index": getattr(args, "index", None),
                 "pipeline.num_candidates": getattr(args, "num_candidates", None),
                 "pipeline.sources": getattr(args, "sources", None)}
    config = config.with_settings({k: v for k, v in shortcuts.items() if v is not None})
    return config.with_settings(_parse_overrides(args.set))


def _train_candidates(args: argparse.Namespace) -> int:
    from ytdnn.data.schema import Dataset
    from ytdnn.training import fit_candidates

    if args.data is None and args.examples is None:
        raise ValueError("train candidates needs --data (the logs), or --examples (prepared shards)")
    config = _settings(args)
    epochs_run = []  # the epochs this process trained: none when it only found a finished run

    def on_log(record: dict) -> None:
        if "train_loss" in record:
            epochs_run.append(record["epoch"])
        _print_epoch(record)

    gen = fit_candidates(Dataset.load(args.data) if args.data else None, config, out_dir=args.out,
                         on_log=on_log, auto=args.auto, examples=args.examples, resume=not args.overwrite)
    if not _writes():
        return 0
    _print_selection(gen)
    gen.save(args.out, metrics={"history": gen.history_.to_dict(), "selection": gen.selection_})
    stale = Path(args.out) / "ranker"
    if epochs_run and stale.is_dir() and not stale.is_symlink():  # it ranks for the generator just replaced
        shutil.rmtree(stale)
        print(f"note: removed {stale}, the ranker of the generator this one replaces: train it again "
              f"(ytdnn train ranker --model {args.out})", file=sys.stderr)
    last = gen.history_.epochs[-1]
    print(f"trained {len(gen.history_.epochs)} epochs ({last['examples_per_second']:.0f} examples/s, "
          f"final loss {last['train_loss']:.4f}); model written to {args.out}")
    _note_event_store(args.out)
    return 0


def _evaluate(args: argparse.Namespace) -> int:

    from ytdnn.candidates import CandidateGenerator
    from ytdnn.configuration import AUTO_CHOICES
    from ytdnn.data.schema import Dataset
    from ytdnn.eval.compare import MODELS, compare
    from ytdnn.eval.report import format_table, machine_description

    config = _settings(args)
    choices = {name: config.with_settings(s) for name, s in AUTO_CHOICES.items()} if args.auto else {"": config}
    generators = {name: functools.partial(CandidateGenerator, **c.generator_kwargs()) for name, c in choices.items()}
    generator = generators if args.auto else generators[""]
    dataset = Dataset.load(args.data)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise ValueError(f"--models names no model; choose among {', '.join(MODELS)}")
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a directory: give the JSON file to write")
    print(f"evaluating {', '.join(models)} on {args.data} ({args.protocol}); choices on validation, "
          "figures on test after a refit", file=sys.stderr, flush=True)
    records = compare(dataset, args.protocol, models, generator,
                      name=Path(args.data).name, command="ytdnn " + " ".join(sys.argv[1:]),
                      seed=args.seed, progress=True, on_log=_print_epoch)
    for record in records:
        record.machine = machine_description()
    print(format_table(records))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps([r.to_dict() for r in records], indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _print_selection(gen) -> None:
    """What the automatic validation chose, on stderr."""
    selection = gen.selection_ or {}
    auto = selection.get("auto")
    if auto and auto.get("chosen"):
        figures = {name: round(v[auto["monitor"]], 4) for name, v in auto["valid"].items()}
        print(f"--auto chose {auto['chosen']!r} ({auto['monitor']} on the log's own validation split: "
              f"{figures}), {auto['epochs']} epochs", file=sys.stderr)
    elif "epochs" in selection:
        print(f"{selection['epochs']} epochs, chosen on the log's own validation split "
              f"({selection['monitor']} {selection['valid'][selection['monitor']]:.4f}, popularity "
              f"{selection['popularity'][selection['monitor']]:.4f})", file=sys.stderr)


def _print_epoch(record: dict) -> None:
    """One line per finished epoch on stderr (the tqdm bars show only on a terminal)."""
    if "train_loss" in record:
        val = {k: round(v, 4) for k, v in (record.get("val") or {}).items()}
        print(f"  epoch {record['epoch'] + 1}: loss {record['train_loss']:.4f} {val or ''} "
              f"({record['examples_per_second']:.0f} examples/s)", file=sys.stderr, flush=True)


def _retrieve(args: argparse.Namespace) -> int:
    from ytdnn.pipeline import Recommender

    gen = Recommender.load(args.model).candidates  # a candidates or a two-stage directory
    user = _typed_id(args.user, gen.featurizer_.users_.token_type_)
    _note_history(gen, user)
    items, scores = gen.retrieve([user], k=args.k)
    titles = gen.item_titles()
    for rank, (item, score) in enumerate(zip(items[0], scores[0]), 1):
        title = titles.get(item, "")
        print(f"{rank:4d}  {item!s:>10}  {score:9.4f}  {title}")
    return 0


def _train_ranker(args: argparse.Namespace) -> int:
    from ytdnn.data.schema import Dataset
    from ytdnn.training import train_ranker

    rec = train_ranker(Dataset.load(args.data), args.model, out=args.out, config=_settings(args),
                       prepared=_prepared_pages(args.examples, args.model) if args.examples else None,
                       resume=not args.overwrite)
    if not _writes():
        return 0
    last = rec.ranker.history_.epochs[-1]
    print(f"trained the ranker {len(rec.ranker.history_.epochs)} epochs (final loss {last['train_loss']:.4f}); "
          f"written to {args.out or Path(args.model) / 'ranker'}")
    _note_event_store(args.out or args.model)
    return 0


def _prepared_pages(prepared: str, model: str):
    """The pages of a prepared directory, with a warning when another generator built them."""
    from ytdnn.pipeline import generator_dir
    from ytdnn.scale.prepare import read_pages

    built, pages = read_pages(prepared)
    if Path(built["generator"]) != generator_dir(model).resolve():
        print(f"warning: the pages in {prepared} were built by the generator in {built['generator']}, "
              f"not by {model}'s", file=sys.stderr)
    return pages


def _train_all(args: argparse.Namespace) -> int:
    from ytdnn.data.schema import Dataset
    from ytdnn.training import train_all

    rec = train_all(Dataset.load(args.data), args.out, _settings(args), auto=args.auto, resume=not args.overwrite)
    if not _writes():
        return 0
    _print_selection(rec.candidates)
    print(f"trained the candidate generator and the ranker; model written to {args.out}")
    _note_event_store(args.out)
    return 0


def _note_event_store(model_dir: str | Path) -> None:
    """A model trained into a served directory: its event store stays, with the history it holds."""
    from ytdnn.serve.seed import STORE_FILE

    if (Path(model_dir) / STORE_FILE).exists():
        print(f"note: {Path(model_dir) / STORE_FILE} (the server's event store) is kept: `ytdnn serve` reads "
              "each user's history from it, seeded from the model it was created for, plus every event posted "
              "since; delete it to seed a new one from this model", file=sys.stderr)


def _writes() -> bool:
    """False on the ranks other than 0 of a data-parallel job: rank 0 alone writes and reports."""
    from ytdnn.train.distributed import is_main

    return is_main()


def _data_parallel(args: argparse.Namespace, argv: list[str]) -> int:
    """A train command with --nproc N: started as N processes by torchrun (this same command
    line without --nproc), or, inside torchrun, run in its process group."""
    from datetime import timedelta

    from ytdnn.train.distributed import launched, process_group

    if args.nproc < 1 or not args.timeout > 0:
        raise ValueError(f"--nproc must be >= 1 and --timeout > 0 seconds, got {args.nproc} and {args.timeout}")
    if args.nproc > 1 and not launched():
        import subprocess

        # what fails alike in every rank fails here once, before torchrun starts N processes
        _settings(args)
        if getattr(args, "data", None) and not (Path(args.data) / "watches.parquet").is_file():
            raise ValueError(f"--data {args.data}: no watches.parquet there")
        import tempfile

        # torchrun's own parser would take --nproc for an abbreviation of its --nproc-per-node
        rest = [a for i, a in enumerate(argv) if a != "--nproc" and not a.startswith("--nproc=")
                and (i == 0 or argv[i - 1] != "--nproc")]
        # torchrun keeps its per-rank logs in a folder it never removes (/tmp/torchelastic_*
        # without --log-dir): give it one that goes when the job ends
        with tempfile.TemporaryDirectory(prefix="ytdnn-torchrun-") as logs:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--log-dir={logs}",
                        f"--nproc-per-node={args.nproc}", "-m", "ytdnn", *rest]
            return subprocess.call(torchrun)
    if launched():  # a rank that aborts (SIGABRT, SIGSEGV) prints where it was, for the job's log
        faulthandler.enable()
    with process_group(timedelta(seconds=args.timeout)):
        if not _writes():
            warnings.simplefilter("ignore")  # rank 0 says it once
        code = args.func(args)
    if launched():
        # A worker whose group is destroyed and whose results are written ends here. Interpreter
        # teardown after destroy_process_group aborted a gloo rank at random in CI ("terminate
        # called without an active exception", SIGABRT), and torchrun then failed a finished job.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _parallel_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=int, default=1,
                        help="data-parallel processes on this machine (torchrun); cfg batch_size is the "
                             "global batch, each process takes batch_size / N of it")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds a process waits for the others before failing (data-parallel runs)")


def _overwrite_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a directory that holds an earlier run's checkpoints, instead of "
                             "resuming it (a run resumes only on the same data and settings)")


def _recommend(args: argparse.Namespace) -> int:
    from ytdnn.pipeline import Recommender

    rec = Recommender.load(args.model, num_candidates=args.candidates)
    gen = rec.candidates
    user = _typed_id(args.user, gen.featurizer_.users_.token_type_)
    _note_history(gen, user)
    result = rec.recommend(user, k=args.k)
    if not len(result.item_ids):
        print(f"nothing to recommend to user {args.user!r}: every item the model knows is watched",
              file=sys.stderr)
    titles = gen.item_titles()
    rows = zip(result.item_ids, result.scores, result.stages, result.sources)
    for rank, (item, score, stage, sources) in enumerate(rows, 1):
        nominated = f"  [{'+'.join(sources)}]" if rec.sources else ""  # which sources, with several
        print(f"{rank:4d}  {item!s:>10}  {score:10.4f}  {stage:<10}  {titles.get(item, '')}{nominated}")
    return 0


def _note_history(gen, user: str) -> None:
    if gen.user_rows([user])[0] == 0:
        print(f"user {user!r} is unknown: cold start (no history, no features)", file=sys.stderr)
    elif not gen.keeps_history:
        print(f"note: this model keeps no history (trained from prepared shards without --data): user {user!r} "
              "is served without their watches", file=sys.stderr)


def _typed_id(value: str, token_type: str):
    """``--user`` as the model's id type: the same check as the server's."""
    from ytdnn.serve.events import coerce_id

    try:
        return coerce_id(value, token_type)
    except ValueError as err:
        raise ValueError(f"--user: {err} (this model's user ids are {token_type}s)") from None


def _serve(args: argparse.Namespace) -> int:
    import logging
    import os

    import uvicorn

    from ytdnn.serve.app import create_app, install_sighup_reload
    from ytdnn.serve.engine import ServeConfig
    from ytdnn.serve.protocol import JSONErrorH11Protocol

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The HTTP event loop and the inference thread share the GIL: hand it over every 1 ms rather
    # than Python's default 5 ms, so a request is not parsed 5 ms late behind a model call.
    sys.setswitchinterval(args.switch_interval_ms / 1000)
    config = ServeConfig(max_batch_size=args.max_batch, num_threads=args.threads,
                         num_candidates=args.candidates, fast_path=not args.reference_path)
    token = os.environ.get("YTDNN_ADMIN_TOKEN") or None
    if token is not None and not token.isascii():
        raise ValueError("YTDNN_ADMIN_TOKEN must be ASCII: an HTTP header cannot carry it as typed")
    _check_port_free(args.host, args.port)  # before the model loads and the store is seeded
    if args.workers > 1:  # each worker sets its threads and switch interval itself
        from ytdnn.serve.workers import serve_workers

        serve_workers(args.model, workers=args.workers, config=config, host=args.host, port=args.port,
                      events=args.events, data_dir=args.data, seed=not args.no_seed,
                      switch_interval_s=args.switch_interval_ms / 1000, log_level=args.log_level,
                      access_log=args.access_log)
        return 0
    if config.num_threads is not None:  # process-wide: set by the entry point, never the library
        import torch

        torch.set_num_threads(config.num_threads)
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    app = create_app(args.model, events=args.events, admin_token=token, config=config,
                     data_dir=args.data, seed=not args.no_seed)
    state = app.state.serve
    install_sighup_reload(state)
    store = getattr(state.store, "path", "memory")
    admin = "token (YTDNN_ADMIN_TOKEN)" if token else "loopback clients only"
    print(f"serving {state.holder.current.version} on http://{args.host}:{args.port} "
          f"(docs: /docs; events: {store}; admin: {admin}; SIGHUP reloads {args.model})",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.access_log, timeout_graceful_shutdown=10, http=JSONErrorH11Protocol)
    return 0


def _check_port_free(host: str, port: int) -> None:
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def _report(args: argparse.Namespace) -> int:
    from ytdnn.eval.html_report import write_report

    path = write_report(args.results, args.out, args.model)
    print(f"wrote {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ytdnn.export import export_onnx

    manifest = export_onnx(args.model, args.out)
    graphs = [manifest["user_tower"], *(manifest["ranker"] or {"members": []})["members"]]
    files = ", ".join(f"{g['file']} ({g['bytes'] / 2**20:.1f} MiB)" for g in graphs)
    print(f"wrote {files}, {manifest['item_vectors']['file']} and manifest.json to {args.out}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from ytdnn.scale.prepare import PageJob

    config = _settings(args)
    seed = config.train.seed if args.seed is None else args.seed
    kwargs = {"examples": config.examples, "seed": seed, "num_shards": args.shards,
              "max_items": config.pipeline.max_items, "max_tokens": config.pipeline.max_tokens,
              "pages": PageJob.of(args.model, config.impressions) if args.model else None}
    if args.engine == "spark":
        from ytdnn.scale.spark import prepare_spark

        manifest = prepare_spark(_spark(args.spark_master), args.data, args.out, **kwargs)
    else:
        from ytdnn.scale.prepare import prepare_local

        manifest = prepare_local(args.data, args.out, **kwargs)
    print(f"wrote {manifest['num_examples']:,} candidate examples in {manifest['num_shards']} shards "
          f"to {args.out} ({args.engine} engine, seed {seed})")
    if "pages" in manifest:
        print(f"wrote {manifest['pages']['num_rows']:,} rows of ranker pages built by {manifest['pages']['generator']}")
    return 0


def _score(args: argparse.Namespace) -> int:
    if args.engine == "spark":
        from ytdnn.scale.spark_score import score_spark

        timings: dict = {}
        rows = score_spark(_spark(args.spark_master), args.model, args.what, args.out, k=args.k,
                           timings=timings, data=args.data)
        if "driver_s" in timings:  # bench/scale.py reads this line
            staged = "" if args.data else " (it staged the users' history: --data avoids it)"
            print(f"driver part took {timings['driver_s']:.1f} s{staged}", file=sys.stderr)
    else:
        from ytdnn.scale.score import score_local

        rows = score_local(args.model, args.what, args.out, k=args.k, data=args.data)
    print(f"wrote {rows:,} rows of {args.what} to {args.out} ({args.engine} engine)")
    return 0


def _spark(master: str):
    """A Spark session on ``master``; how long it took to start goes to stderr (bench/scale.py reads it)."""
    import time

    from ytdnn.scale.spark import spark_session

    start = time.perf_counter()
    spark = spark_session(master)
    print(f"started Spark ({master}) in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return spark


def _engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="local", choices=["local", "spark"],
                        help="local: this process; spark: PySpark (Java 17), the same output")
    parser.add_argument("--spark-master", default="local[2]",
                        help="where Spark runs: local[N], spark://host:7077 or yarn")


def _demo(args: argparse.Namespace) -> int:
    from ytdnn.demo import run_demo

    run_demo(preset=args.preset, out_dir=Path(args.out))
    return 0


def _auto_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--auto", action="store_true",
                        help="choose the generator's settings among a small fixed set (configuration.AUTO_CHOICES) "
                             "on a validation split of the log, and say what it chose")


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="a configuration JSON (sections as `ytdnn config show` lists), or a model's config.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="one setting, e.g. --set ranker.tower=256 --set train.lr=0.003 "
                             "(a bare key when one section has it); `ytdnn config show` lists them")


def _sources_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sources", default=None, metavar="NAME[:N],...",
                        help="candidate sources blended for the ranker: generator (always), ease, cooc, "
                             "popular; N = candidates each adds (default 100) (pipeline.sources)")


def _config_show(args: argparse.Namespace) -> int:
    from ytdnn.configuration import TwoStageConfig, from_model_config
    from ytdnn.modeldir import ModelDir

    if args.model and args.config:
        raise ValueError("config show takes --model or --config, not both")
    if args.model:
        md = ModelDir(args.model)
        md.kind()  # a model directory, or a one-line error saying what it is instead
        with md.loading():
            document = md.read_json("config.json")
            alone = isinstance(document, dict) and document.get("kind") == "ytdnn.candidates"
            beside = md.read_json("ranker/config.json") if alone and md.path("ranker/config.json").is_file() else None
            config = from_model_config(document, beside) if alone else TwoStageConfig.load(md.path("config.json"))
        if alone and beside is None:
            print("note: a candidate generator alone: the ranker and impressions settings shown are the defaults",
                  file=sys.stderr)
    else:
        config = TwoStageConfig.load(args.config) if args.config else TwoStageConfig()
    config = config.with_settings(_parse_overrides(args.set))
    rows = [(key, json.dumps(value if not isinstance(value, tuple) else list(value)), meaning)
            for key, value, meaning in config.describe()]
    width = max(len(k) for k, _, _ in rows), max(len(v) for _, v, _ in rows)
    for key, value, meaning in rows:
        print(f"{key:<{width[0]}}  {value:<{width[1]}}  {meaning}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ytdnn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="make, convert and check canonical tables").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser("synth", help="generate the synthetic YouTube-like world as Parquet")
    synth.add_argument("--preset", default="small",
                       choices=["tiny", "small", "large", "scale-1m", "scale-5m", "scale-20m"])
    synth.add_argument("--chunked", action="store_true",
                       help="generate block by block of users, appending to the Parquet files: memory stays "
                            "bounded for any size (no ground truth saved; always on for the scale-* presets)")
    synth.add_argument("--seed", type=int, default=None)
    synth.add_argument("--out", required=True)
    synth.set_defaults(func=_data_synth)

    movielens = data.add_parser("movielens", help="convert a MovieLens directory to canonical Parquet")
    movielens.add_argument("path", help="ml-100k, ml-1m or ml-latest/20m/25m directory")
    movielens.add_argument("--folds", default=None, help="directory of the ml-1m 3-column fold files")
    movielens.add_argument("--out", required=True)
    movielens.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows and report them")
    movielens.set_defaults(func=_data_movielens)

    movies = data.add_parser("movies-dataset", help="convert Kaggle's The Movies Dataset to canonical Parquet")
    movies.add_argument("path", help="directory with ratings.csv, links.csv and movies_metadata.csv")
    movies.add_argument("--ratings", default="ratings.csv", help="the ratings file (or ratings_small.csv)")
    movies.add_argument("--out", required=True)
    movies.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows and report them")
    movies.set_defaults(func=_data_movies_dataset)

    validate = data.add_parser("validate", help="validate a directory of canonical Parquet tables")
    validate.add_argument("path")
    validate.set_defaults(func=_data_validate)

    train = commands.add_parser("train", help="train a model").add_subparsers(dest="train_command", required=True)
    candidates = train.add_parser("candidates", help="train the candidate generator (paper section 3)")
    candidates.add_argument("--data", default=None,
                            help="directory of canonical Parquet tables (with --examples: only the history the "
                                 "model serves from; without it, no log is read and the model keeps no history)")
    candidates.add_argument("--out", required=True, help="model directory to write")
    _settings_flags(candidates)
    _auto_flag(candidates)
    candidates.add_argument("--index", default=None, choices=["auto", "exact", "ivf", "hnsw"],
                            help="nearest-neighbour index (pipeline.index); auto = exact up to 100k items, IVF beyond")
    candidates.add_argument("--examples", default=None,
                            help="train from the shards `ytdnn prepare` wrote here, streamed (the same settings)")
    _parallel_flags(candidates)
    _overwrite_flag(candidates)
    candidates.set_defaults(func=_train_candidates)

    ranker = train.add_parser("ranker", help="train the ranker (paper section 4) for a candidates model")
    ranker.add_argument("--data", required=True, help="directory of canonical Parquet tables")
    ranker.add_argument("--model", required=True, help="candidates (or two-stage) model directory")
    ranker.add_argument("--out", default=None, help="write a two-stage model here (default: MODEL/ranker)")
    ranker.add_argument("--examples", default=None,
                        help="learn from the pages `ytdnn prepare --model MODEL` built here, instead of building them")
    _settings_flags(ranker)
    _sources_flag(ranker)
    _parallel_flags(ranker)
    _overwrite_flag(ranker)
    ranker.set_defaults(func=_train_ranker)

    both = train.add_parser("all", help="train both stages into one model directory")
    both.add_argument("--data", required=True, help="directory of canonical Parquet tables")
    both.add_argument("--out", required=True, help="model directory to write")
    _settings_flags(both)
    _auto_flag(both)
    both.add_argument("--num-candidates", type=int, default=None,
                      help="candidates ranked per request (pipeline.num_candidates)")
    both.add_argument("--index", default=None, choices=["auto", "exact", "ivf", "hnsw"], help="(pipeline.index)")
    _sources_flag(both)
    _parallel_flags(both)
    _overwrite_flag(both)
    both.set_defaults(func=_train_all)

    recommend = commands.add_parser("recommend", help="top-k recommendations of both stages for a user")
    recommend.add_argument("--model", required=True)
    recommend.add_argument("--user", required=True)
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument("--candidates", type=int, default=None, help="candidates to rank (default: the model's)")
    recommend.set_defaults(func=_recommend)

    evaluate = commands.add_parser("evaluate", help="ytdnn against popularity and EASE on your own log")
    evaluate.add_argument("--data", required=True, help="directory of canonical Parquet tables")
    evaluate.add_argument("--protocol", required=True, choices=["temporal", "random", "global-time"],
                          help="temporal: each user's last watch tests, the one before validates; "
                               "random: 5 folds (or the 'fold' column), fold 1 tests, fold 2 validates; "
                               "global-time: the last tenth of the span tests, the tenth before validates")
    evaluate.add_argument("--models", default="popularity,EASE,ytdnn", help="comma-separated")
    _settings_flags(evaluate)
    _auto_flag(evaluate)
    evaluate.add_argument("--seed", type=int, default=0, help="draws the random folds")
    evaluate.add_argument("--out", default=None, help="write the records as JSON here")
    evaluate.set_defaults(func=_evaluate)

    retrieve = commands.add_parser("retrieve", help="top-k candidates for a user from a model directory")
    retrieve.add_argument("--model", required=True)
    retrieve.add_argument("--user", required=True)
    retrieve.add_argument("--k", type=int, default=100)
    retrieve.set_defaults(func=_retrieve)

    serve = commands.add_parser("serve", help="serve recommendations over HTTP (FastAPI + uvicorn)")
    serve.add_argument("--model", required=True, help="model directory (two-stage or candidates)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--events", default=None,
                       help="SQLite event store file (default: MODEL/events.sqlite); created and "
                            "seeded with the training history if absent")
    serve.add_argument("--data", default=None,
                       help="seed a new event store from these canonical tables instead of the model")
    serve.add_argument("--no-seed", action="store_true", help="leave a new event store empty")
    serve.add_argument("--max-batch", type=int, default=16, help="recommend requests per model call")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes sharing the port and the event store (ytdnn.serve.workers)")
    serve.add_argument("--reference-path", action="store_true",
                       help="rank without the precomputed item tables (the same lists; for comparison)")
    serve.add_argument("--candidates", type=int, default=None,
                       help="candidates retrieved and ranked per request (default: the model's)")
    serve.add_argument("--threads", type=int, default=1, help="torch threads of the inference thread")
    serve.add_argument("--switch-interval-ms", type=float, default=1.0,
                       help="GIL switch interval (Python's default is 5 ms)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(func=_serve)

    config = commands.add_parser("config", help="the settings of both stages").add_subparsers(
        dest="config_command", required=True)
    show = config.add_parser("show", help="every setting with its value (default, or a model's) and meaning")
    show.add_argument("--model", default=None, help="show the settings a model directory was trained with")
    show.add_argument("--config", default=None,
                      help="show a configuration JSON's settings (as `ytdnn train --config` reads it), defaults elsewhere")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="show with these settings")
    show.set_defaults(func=_config_show)

    report = commands.add_parser("report", help="the benchmark results as one self-contained HTML page")
    report.add_argument("results", nargs="?", default="bench/results",
                        help="folder of benchmark records (*.json) and figures (*.png)")
    report.add_argument("--out", required=True, help="folder to write index.html into")
    report.add_argument("--model", action="append", default=[], metavar="DIR",
                        help="a model directory whose training curves to add (repeatable)")
    report.set_defaults(func=_report)

    export = commands.add_parser("export", help="write a model for onnxruntime: ONNX graphs, item vectors, manifest")
    export.add_argument("--model", required=True, help="model directory (two-stage or candidates)")
    export.add_argument("--format", default="onnx", choices=["onnx"])
    export.add_argument("--out", required=True, help="directory to write")
    export.set_defaults(func=_export)

    prepare = commands.add_parser("prepare", help="write the candidate generator's examples (and the ranker's "
                                                 "pages) as Parquet shards")
    prepare.add_argument("--data", required=True, help="directory of canonical Parquet tables")
    prepare.add_argument("--out", required=True, help="directory to write (prepare.json, featurizer/, candidates/)")
    _engine_flags(prepare)
    prepare.add_argument("--shards", type=int, default=8, help="number of Parquet shards (users hashed into them)")
    prepare.add_argument("--seed", type=int, default=None, help="draws the per-user cap (default: train.seed)")
    prepare.add_argument("--model", default=None,
                         help="a trained candidates (or two-stage) model: also build the ranker's pages with its "
                              "generator (pages/; the requests drawn with impressions.seed)")
    _settings_flags(prepare)
    prepare.set_defaults(func=_prepare)

    score = commands.add_parser("score", help="user vectors, item vectors or every user's top k, as Parquet")
    score.add_argument("--model", required=True, help="model directory (two-stage or candidates)")
    score.add_argument("--what", required=True, choices=["users", "items", "recommendations"])
    score.add_argument("--out", required=True, help="Parquet file (local engine) or folder (spark engine)")
    score.add_argument("--k", type=int, default=10, help="recommendations per user")
    score.add_argument("--data", help="directory of the canonical Parquet logs the model was trained on "
                       "(watches, searches, users): each partition builds its users' history from them, so "
                       "no process reads the model's whole history (without it, the Spark driver stages "
                       "it); users the model does not know are skipped")
    _engine_flags(score)
    score.set_defaults(func=_score)

    demo = commands.add_parser("demo", help="run the main job end to end on the synthetic world")
    demo.add_argument("--preset", default="small", choices=["tiny", "small", "large"])
    demo.add_argument("--out", default="demo_out")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ytdnn.data.schema import DataError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "nproc", None) is not None:  # a train command: maybe several processes
            return _data_parallel(args, argv)
        return args.func(args)
    except (DataError, FileNotFoundError, ValueError) as err:
        print(f"ytdnn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: training has checkpointed every finished epoch
        print("ytdnn: interrupted; a train command run again the same way resumes from its last "
              "checkpoint", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ytdnn config show | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
