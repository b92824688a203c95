"""The command line: `python -m study run|confirm|lr-find|spaces|report|list|dashboard|serve-storage`
(also the `study` console script). Parsing is here; what each command does is in commands.py.

    python -m study run quick --trials 20 --device auto --jobs 2
    python -m study confirm --storage sqlite:///study.db --seeds 5
    python -m study spaces
    python -m study report --storage sqlite:///study.db
    python -m study dashboard --port 8080

Bad input (a space, a key, a flag) prints one line naming where, the key and the value, and exits 2
before any study is created or changed.
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from pathlib import Path

from study import interrupts


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (got {text!r})")
    return int(text)


def _count(text: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 (got {text!r})")
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
    if not re.fullmatch(r"\d{1,20}", text) or int(text) >= 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32 - 1] (got {text!r})")
    return int(text)


def _port(text: str) -> int:
    if not re.fullmatch(r"\d{1,5}", text) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in [1, 65535] (got {text!r})")
    return int(text)


class _Version(argparse.Action):
    """`study --version`: what a bug report needs, as every trial stores it (provenance.py); read only when
    asked, since it runs git."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, nargs=0,
                         help="print the versions of study (and its git revision), torch, optuna, numpy, "
                              "scikit-learn and Python, then exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from study.provenance import provenance

        p = dict(provenance())
        revision = p.pop("git_revision")
        head = f"study {p.pop('study')}" + (f" (git {revision})" if revision != "unknown" else "")
        print(f"{head}; " + ", ".join(f"{name} {version}" for name, version in p.items()))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description="Hyperparameter studies of real PyTorch training runs.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) a study over a search space")
    run.add_argument("space", nargs="?", default="quick",
                     help="a shipped space (see `study spaces`) or a path to a YAML file (default: quick)")
    run.add_argument("--trials", type=_positive_int, help="finished trials the study should reach in total")
    run.add_argument("--timeout", type=_seconds, help="stop starting trials after this many seconds")
    run.add_argument("--storage", help="sqlite:///file.db, postgresql://..., grpc://HOST:PORT (study serve-storage), "
                                       "redis://HOST:PORT/DB or a journal file path "
                                       "(default: sqlite:///study.db in the current directory)")
    run.add_argument("--study-name", help="default: study.name from the YAML")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    run.add_argument("--engine", choices=("auto", "sequential", "population"),
                     help="population: trials that share a graph train K at a time as one fused model; auto: "
                          "populations where trials can share a graph, else one at a time (default: study.engine, "
                          "else auto)")
    run.add_argument("--population", type=_positive_int, metavar="K",
                     help="trials per population (default: the device's sweet spot, 16 on a CPU, 64 on CUDA, "
                          "capped in the search at a quarter of its trials; on CUDA, at most what a probe step "
                          "finds room for in free memory)")
    run.add_argument("--jobs", type=_positive_int, default=1,
                     help="worker processes on this machine sharing the study's target (default: 1)")
    run.add_argument("--threads", type=_positive_int, metavar="N",
                     help="intra-op threads per worker (default: study.threads, else one for a trial too small "
                          "to gain from more and the worker's share of the cores for a larger one)")
    run.add_argument("--heartbeat", type=_positive_int, default=10, metavar="SECONDS",
                     help="a running trial's heartbeat; a worker silent for 3x this is taken for dead and its "
                          "trial retried (default: 10)")
    run.add_argument("--seed", type=_seed, help="seeds the sampler and every trial's model and batch order")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a YAML value, e.g. --set training.lr=1e-3 (repeatable)")
    run.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"),
                     help="where per-study checkpoint folders go (default: ./checkpoints)")
    run.add_argument("--report-dir", type=Path, default=Path("reports"),
                     help="where the HTML report goes (default: ./reports)")
    run.add_argument("--no-report", action="store_true", help="do not write the HTML report at the end")
    run.add_argument("--artifact-dir", type=Path, default=Path("artifacts"),
                     help="if this folder exists, the best checkpoint and the report's figures are uploaded to it "
                          "as Optuna artifacts for optuna-dashboard (default: ./artifacts)")
    run.add_argument("--retry-stale", action="store_true",
                     help="on a storage without a heartbeat (journal file, Redis): fail the trials left running by "
                          "workers that this machine cannot tell alive (another machine's) and queue them again "
                          "(only when no other worker runs them; a dead worker of this machine's is retried "
                          "anyway)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-trial lines")

    for command in (run, confirm := sub.add_parser(
            "confirm", help="retrain each arm's best configs of a stored study with fresh seeds, and give the "
                            "verdict with its uncertainty (the phase `run` ends with)")):
        command.add_argument("--top", "--confirm-top", dest="top", type=_positive_int,
                            help="configs per arm to confirm (default: study.confirm.top, else 3)")
        # `run --confirm-seeds 0` skips the phase, as `seeds: 0` does; `confirm` with no seeds has nothing to run.
        command.add_argument("--seeds", "--confirm-seeds", dest="seeds",
                             type=_count if command is run else _positive_int,
                             help="fresh seeds per config (default: study.confirm.seeds, else 5)"
                                  + ("; 0: no confirmation phase" if command is run else ""))
    confirm.add_argument("--storage", help="default: sqlite:///study.db in the current directory")
    confirm.add_argument("--study-name", help="needed when the storage holds more than one study")
    confirm.add_argument("--vary-split", action="store_true", help="vary the data split's seed with the seed")
    confirm.add_argument("--timeout", type=_seconds,
                         help="start no run after this many seconds (a --timeout of the `run` that made the study "
                              "was that command's own)")
    confirm.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    confirm.add_argument("--jobs", type=_positive_int, default=1, help="worker processes (default: 1)")
    confirm.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"))
    confirm.add_argument("--report-dir", type=Path, default=Path("reports"))
    confirm.add_argument("--no-report", action="store_true")
    confirm.add_argument("-q", "--quiet", action="store_true")

    finder = sub.add_parser("lr-find", help="LR range test for each optimizer of a space: suggested lr ranges and "
                                              "the loss-against-lr figure (Smith 2017)")
    finder.add_argument("space", nargs="?", default="quick", help="a shipped space or a YAML file (default: quick)")
    finder.add_argument("--iterations", type=_positive_int, default=200, help="steps of the ramp (default: 200)")
    finder.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    finder.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    finder.add_argument("--report-dir", type=Path, default=Path("reports"),
                        help="where lr-find.png goes, in the space's folder (default: ./reports)")

    sub.add_parser("spaces", help="list the shipped search spaces and the question each answers")

    report = sub.add_parser("report", help="write the HTML comparison report of a stored study (no training)")
    _storage_args(report)
    report.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: ./reports)")
    report.add_argument("--artifact-dir", type=Path, default=Path("artifacts"),
                        help="upload the figures to this Optuna artifact folder, if it exists (default: ./artifacts)")
    report.add_argument("--list", action="store_true", help="list the studies in the storage instead")
    report.add_argument("--compare", nargs="+", metavar="NAME",
                        help="put these studies of the storage side by side instead (best values, curves, settings)")

    listing = sub.add_parser("list", help="list the studies in a storage with counts and best values")
    _storage_args(listing)

    proxy = sub.add_parser("serve-storage", help="serve a PostgreSQL (or other RDB) storage to many workers "
                                                 "through Optuna's gRPC proxy: they use --storage grpc://HOST:PORT")
    proxy.add_argument("--storage", required=True, help="the database the proxy holds the connections to, "
                                                        "e.g. postgresql://postgres@127.0.0.1/test")
    proxy.add_argument("--host", default="127.0.0.1",
                       help="interface to listen on (default: 127.0.0.1; 0.0.0.0 for other machines)")
    proxy.add_argument("--port", type=_port, default=13000, help="default: 13000")

    dash = sub.add_parser("dashboard", help="start optuna-dashboard on 127.0.0.1 for a storage")
    dash.add_argument("--storage", help="default: sqlite:///study.db in the current directory")
    dash.add_argument("--port", type=_port, default=8080, help="default: 8080")
    dash.add_argument("--artifact-dir", type=Path, default=Path("artifacts"),
                      help="show the artifacts in this folder, if it exists (default: ./artifacts)")
    return parser


def _storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help="default: sqlite:///study.db in the current directory")
    parser.add_argument("--study-name", help="needed when the storage holds more than one study")


def entry() -> int:
    """`study` and `python -m study`: main(), then an exit that skips collecting what the run leaves."""
    # A terminal or pipe whose encoding lacks a character of a study name or a path (PYTHONIOENCODING=ascii,
    # a latin-1 locale) gets it escaped, as stderr already has it, not a UnicodeEncodeError mid-command.
    if sys.stdout is not None:  # None where the shell closed it (`>&-`): print() then writes nothing
        sys.stdout.reconfigure(errors="backslashreplace")
    code = main()
    # The interpreter's last garbage collections walk every object torch, scikit-learn, pandas and Optuna
    # made: about 1 s of a 9 s `quick` run here (0.2 s frozen). The process ends anyway; atexit handlers,
    # stream flushes and plain reference counting still run.
    gc.freeze()
    return code


# What a stopped command leaves, said after "interrupted".
STOPPED = {"run": ": rerun the same command to resume the study",
           "confirm": ": rerun the same command to resume the study",
           "report": ": the report was not written"}


def main(argv: list[str] | None = None) -> int:
    if os.getcwd() not in sys.path and "" not in sys.path:  # the `study` script finds the user's
        sys.path.insert(0, os.getcwd())  # package.module:callable in this folder, as `python -m study` does
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # argparse drops an option value that is exactly "--" (`--study-name=--` arrives as []): take it as given.
    given = [a.partition("=")[2] for a in argv if a.startswith("--study-name=")]
    if given and getattr(args, "study_name", None) == []:
        args.study_name = given[-1]
    from study.errors import ConfigError
    from study.files import DiskFull

    from study import commands

    try:
        if args.command == "spaces":
            return commands.spaces()
        if args.command == "list" or (args.command == "report" and args.list):
            return commands.list_studies(args)
        if args.command == "dashboard":
            return commands.dashboard(args)
        if args.command == "serve-storage":
            return commands.serve_storage(args)
        command = {"run": commands.run, "confirm": commands.confirm, "lr-find": commands.lr_find,
                   "report": commands.report}[args.command]
        try:
            # Ctrl-C and SIGTERM request a stop that the command checks after its imports and between its
            # steps. Raised from the handler at once, they could land in Python code that torch's C++ import
            # calls back, which then aborts the process (exit -6 or -2, seen in CI and in a stress test). A
            # second signal raises at once.
            with interrupts.handled():
                return command(args)
        except KeyboardInterrupt:
            print(f"\ninterrupted{STOPPED.get(args.command, '')}", file=sys.stderr)
            return 130
    except KeyboardInterrupt:  # Ctrl-C while a command without safe points imports or reads: nothing to lose
        print("\ninterrupted", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DiskFull as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader of stdout has gone (`| head`); nothing is lost
        from study.console import silence_stdout

        silence_stdout()
        return 0
    except Exception as exc:  # a storage that fails mid-command (full, or its server gone): one line, no traceback
        from study.storage import default_storage, failure, shown

        url = getattr(args, "storage", None) or default_storage()
        said = failure(exc)
        if said is None:
            raise
        print(f"error: the storage {shown(url)} failed: {said}. What it stored before is kept: rerun the command "
              "once it works again.", file=sys.stderr)
        return 1
