"""The `ytdnn` command: thin subcommands that parse flags and call one library function each."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _data_synth(args: argparse.Namespace) -> int:
    from ytdnn.data.synthetic import WorldConfig, generate

    overrides = {"seed": args.seed} if args.seed is not None else {}
    world = generate(WorldConfig.preset(args.preset, **overrides))
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


def _data_validate(args: argparse.Namespace) -> int:
    from ytdnn.data.schema import Dataset

    dataset = Dataset.load(args.path)
    counts = ", ".join(f"{len(t):,} {name}" for name, t in dataset.tables().items())
    print(f"{args.path}: valid ({counts})")
    return 0


def _parse_overrides(pairs: list[str]) -> dict[str, object]:
    """["depth=2", "lr=0.003", "tower_widths=[64,32]"] -> typed values (JSON, else the string)."""
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _train_candidates(args: argparse.Namespace) -> int:
    from ytdnn.candidates import CandidateGenerator, configs_from_json, split_overrides
    from ytdnn.data.schema import Dataset

    configs = configs_from_json(args.config) if args.config else {}
    configs = split_overrides(configs, _parse_overrides(args.set))
    dataset = Dataset.load(args.data)
    gen = CandidateGenerator(**configs).fit(
        dataset.watches, dataset.searches, dataset.users, items=dataset.items, out_dir=args.out
    )
    gen.build_index(args.index)
    gen.save(args.out, metrics={"history": gen.history_.to_dict()})
    last = gen.history_.epochs[-1]
    print(f"trained {len(gen.history_.epochs)} epochs ({last['examples_per_second']:.0f} examples/s, "
          f"final loss {last['train_loss']:.4f}); model written to {args.out}")
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    from ytdnn.candidates import CandidateGenerator

    gen = CandidateGenerator.load(args.model)
    user = _typed_id(args.user, gen.featurizer_.users_.token_type_)
    if gen.user_rows([user])[0] == 0:
        print(f"user {args.user!r} is unknown: cold start (no history, no features)", file=sys.stderr)
    items, scores = gen.retrieve([user], k=args.k)
    titles = gen.item_titles()
    for rank, (item, score) in enumerate(zip(items[0], scores[0]), 1):
        title = titles.get(item, "")
        print(f"{rank:4d}  {item!s:>10}  {score:9.4f}  {title}")
    return 0


def _train_ranker(args: argparse.Namespace) -> int:
    from ytdnn.data.schema import Dataset
    from ytdnn.pipeline import ranker_configs, train_ranker

    configs = ranker_configs(_parse_overrides(args.set))
    rec = train_ranker(Dataset.load(args.data), args.model, out=args.out, configs=configs)
    last = rec.ranker.history_.epochs[-1]
    print(f"trained the ranker {len(rec.ranker.history_.epochs)} epochs (final loss {last['train_loss']:.4f}); "
          f"written to {args.out or Path(args.model) / 'ranker'}")
    return 0


def _train_all(args: argparse.Namespace) -> int:
    from ytdnn.candidates import configs_from_json, split_overrides
    from ytdnn.data.schema import Dataset
    from ytdnn.pipeline import ranker_configs, train_all

    candidate = configs_from_json(args.config) if args.config else {}
    candidate = split_overrides(candidate, _parse_overrides(args.set))
    configs = ranker_configs(_parse_overrides(args.ranker_set))
    train_all(Dataset.load(args.data), args.out, candidate, configs, args.num_candidates, args.index)
    print(f"trained the candidate generator and the ranker; model written to {args.out}")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from ytdnn.pipeline import Recommender

    rec = Recommender.load(args.model, num_candidates=args.candidates)
    gen = rec.candidates
    user = _typed_id(args.user, gen.featurizer_.users_.token_type_)
    if gen.user_rows([user])[0] == 0:
        print(f"user {args.user!r} is unknown: cold start (no history, no features)", file=sys.stderr)
    result = rec.recommend(user, k=args.k)
    titles = gen.item_titles()
    for rank, (item, score, stage) in enumerate(zip(result.item_ids, result.scores, result.stages), 1):
        print(f"{rank:4d}  {item!s:>10}  {score:10.4f}  {stage:<10}  {titles.get(item, '')}")
    return 0


def _typed_id(value: str, token_type: str):
    return int(value) if token_type == "int" else value


def _serve(args: argparse.Namespace) -> int:
    import logging
    import os

    import uvicorn

    from ytdnn.serve.app import create_app, install_sighup_reload
    from ytdnn.serve.engine import ServeConfig

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The HTTP event loop and the inference thread share the GIL: hand it over every 1 ms rather
    # than Python's default 5 ms, so a request is not parsed 5 ms late behind a model call.
    sys.setswitchinterval(args.switch_interval_ms / 1000)
    config = ServeConfig(max_batch_size=args.max_batch, num_threads=args.threads,
                         num_candidates=args.candidates)
    token = os.environ.get("YTDNN_ADMIN_TOKEN") or None
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
                access_log=args.access_log, timeout_graceful_shutdown=10)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ytdnn.demo import run_demo

    run_demo(preset=args.preset, out_dir=Path(args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ytdnn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="make, convert and check canonical tables").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser("synth", help="generate the synthetic YouTube-like world as Parquet")
    synth.add_argument("--preset", default="small", choices=["tiny", "small", "large"])
    synth.add_argument("--seed", type=int, default=None)
    synth.add_argument("--out", required=True)
    synth.set_defaults(func=_data_synth)

    movielens = data.add_parser("movielens", help="convert a MovieLens directory to canonical Parquet")
    movielens.add_argument("path", help="ml-100k, ml-1m or ml-latest/20m/25m directory")
    movielens.add_argument("--folds", default=None, help="directory of the ml-1m 3-column fold files")
    movielens.add_argument("--out", required=True)
    movielens.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows and report them")
    movielens.set_defaults(func=_data_movielens)

    validate = data.add_parser("validate", help="validate a directory of canonical Parquet tables")
    validate.add_argument("path")
    validate.set_defaults(func=_data_validate)

    train = commands.add_parser("train", help="train a model").add_subparsers(dest="train_command", required=True)
    candidates = train.add_parser("candidates", help="train the candidate generator (paper section 3)")
    candidates.add_argument("--data", required=True, help="directory of canonical Parquet tables")
    candidates.add_argument("--out", required=True, help="model directory to write")
    candidates.add_argument("--config", default=None, help="config.json with candidate/examples/train sections")
    candidates.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override one setting, e.g. --set depth=2 --set lr=0.003")
    candidates.add_argument("--index", default="auto", choices=["auto", "exact", "ivf", "hnsw"],
                            help="nearest-neighbour index; auto = exact up to 100k items, IVF beyond")
    candidates.set_defaults(func=_train_candidates)

    ranker = train.add_parser("ranker", help="train the ranker (paper section 4) for a candidates model")
    ranker.add_argument("--data", required=True, help="directory of canonical Parquet tables")
    ranker.add_argument("--model", required=True, help="candidates (or two-stage) model directory")
    ranker.add_argument("--out", default=None, help="write a two-stage model here (default: MODEL/ranker)")
    ranker.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="ranker, training or impression setting, e.g. --set tower=512-256")
    ranker.set_defaults(func=_train_ranker)

    both = train.add_parser("all", help="train both stages into one model directory")
    both.add_argument("--data", required=True, help="directory of canonical Parquet tables")
    both.add_argument("--out", required=True, help="model directory to write")
    both.add_argument("--config", default=None, help="config.json with candidate/examples/train sections")
    both.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="candidate generator setting, as for `train candidates`")
    both.add_argument("--ranker-set", action="append", default=[], metavar="KEY=VALUE",
                      help="ranker, training or impression setting, e.g. --ranker-set tower=256")
    both.add_argument("--num-candidates", type=int, default=500, help="candidates ranked per request")
    both.add_argument("--index", default="auto", choices=["auto", "exact", "ivf", "hnsw"])
    both.set_defaults(func=_train_all)

    recommend = commands.add_parser("recommend", help="top-k recommendations of both stages for a user")
    recommend.add_argument("--model", required=True)
    recommend.add_argument("--user", required=True)
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument("--candidates", type=int, default=None, help="candidates to rank (default: the model's)")
    recommend.set_defaults(func=_recommend)

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
    serve.add_argument("--candidates", type=int, default=None,
                       help="candidates retrieved and ranked per request (default: the model's)")
    serve.add_argument("--threads", type=int, default=1, help="torch threads of the inference thread")
    serve.add_argument("--switch-interval-ms", type=float, default=1.0,
                       help="GIL switch interval (Python's default is 5 ms)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(func=_serve)

    demo = commands.add_parser("demo", help="run the main job end to end on the synthetic world")
    demo.add_argument("--preset", default="small", choices=["tiny", "small", "large"])
    demo.add_argument("--out", default="demo_out")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ytdnn.data.schema import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, FileNotFoundError, ValueError) as err:
        print(f"ytdnn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
