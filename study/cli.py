"""The command line: `python -m study run|spaces ...` (also the `study` console script).

    python -m study run quick --trials 20 --device auto
    python -m study spaces

Bad input (a space, a key, a flag) prints one line naming where, the key and the value, and exits 2
before any study is created or changed.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (got {text!r})")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0 (got {text!r})")
    return value


def _seed(text: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 (got {text!r})")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description="Hyperparameter studies of real PyTorch training runs.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) a study over a search space")
    run.add_argument("space", nargs="?", default="quick",
                     help="a shipped space (see `study spaces`) or a path to a YAML file (default: quick)")
    run.add_argument("--trials", type=_positive_int, help="finished trials the study should reach in total")
    run.add_argument("--timeout", type=_seconds, help="stop starting trials after this many seconds")
    run.add_argument("--storage", help="sqlite:///file.db, postgresql://..., or a journal file path "
                                       "(default: sqlite:///study.db in the current directory)")
    run.add_argument("--study-name", help="default: study.name from the YAML")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    run.add_argument("--seed", type=_seed, help="seeds the sampler and every trial's model and batch order")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a YAML value, e.g. --set training.lr=1e-3 (repeatable)")
    run.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"),
                     help="where per-study checkpoint folders go (default: ./checkpoints)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-trial lines")

    sub.add_parser("spaces", help="list the shipped search spaces and the question each answers")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from study.config import ConfigError

    try:
        if args.command == "spaces":
            return _spaces()
        return _run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _spaces() -> int:
    from study.config import load_config, shipped_spaces

    for name in shipped_spaces():
        cfg = load_config(name, probe_data=False)
        print(f"{name:<20} {cfg.study.question}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from study.config import load_config
    from study.devices import resolve_device
    from study.storage import default_storage

    overrides = list(args.overrides)
    # Flags are overrides like --set, so they are validated by the same rules.
    if args.trials is not None:
        overrides.append(f"study.n_trials={args.trials}")
    if args.timeout is not None:
        overrides.append(f"study.timeout={args.timeout}")
    if args.study_name is not None:
        overrides.append(f"study.name={_yaml_str(args.study_name)}")
    if args.seed is not None:
        overrides += [f"training.seed={args.seed}", f"study.sampler.seed={args.seed}"]
    device = resolve_device(args.device)  # before anything touches the storage
    cfg = load_config(args.space, overrides)

    from study.runner import run_study

    storage = args.storage or default_storage()
    try:
        summary = run_study(cfg, storage, device, checkpoint_root=args.checkpoint_dir, quiet=args.quiet)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume the study", file=sys.stderr)
        return 130
    print(summary.text())
    return 1 if summary.stopped else 0


def _yaml_str(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a YAML string, whatever it contains
