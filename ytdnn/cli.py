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
    from ytdnn.data.readers import read_movielens, read_movielens_folds

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
