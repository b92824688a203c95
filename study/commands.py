"""What each command of the command line does (cli.py parses the arguments and calls these).

Each imports what it needs when it runs, so that `study --help` and `study spaces` stay quick.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from study import interrupts
from study.console import say
from study.errors import printable


def spaces() -> int:
    # The YAML alone, not the validated config: that imports torch for its registries, seconds for a
    # listing (the shipped spaces are validated by the tests).
    from study.spaces import read_space, shipped_spaces

    for name, path in shipped_spaces().items():
        say(f"{name:<20} {str(read_space(path).get('study', {}).get('question', '')).strip()}")
    return 0


def run(args: argparse.Namespace) -> int:
    from study import preflight
    from study.config import check_study_name, load_config
    from study.devices import resolve_device
    from study.errors import ConfigError
    from study.storage import check_storage, default_storage

    overrides: list = list(args.overrides)
    # Flags are overrides like --set, so they are validated by the same rules.
    if args.trials is not None:
        overrides.append(("study.n_trials", args.trials))
    if args.timeout is not None:
        overrides.append(("study.timeout", args.timeout))
    if args.study_name is not None:
        try:
            overrides.append(("study.name", check_study_name(args.study_name)))
        except ValueError as exc:
            raise ConfigError("--study-name", "study-name", args.study_name, str(exc)) from None
    if args.seed is not None:
        overrides += [("training.seed", args.seed), ("study.sampler.seed", args.seed)]
    overrides += [(f"study.confirm.{k}", getattr(args, k)) for k in ("top", "seeds") if getattr(args, k) is not None]
    for flag, key in (("engine", "study.engine"), ("population", "study.population"), ("threads", "study.threads")):
        if getattr(args, flag) is not None:
            overrides.append((key, getattr(args, flag)))
    device = resolve_device(args.device)  # before anything touches the storage
    cfg = load_config(args.space, overrides)
    storage = args.storage or default_storage()
    preflight.check(cfg, checkpoint_root=args.checkpoint_dir, report_dir=None if args.no_report else args.report_dir,
                    storage_url=storage, device=device)
    interrupts.check()  # a stop asked for during the imports: before anything is written
    if args.jobs > 1:  # the input is good: the workers' imports begin beside this process's
        from study.parallel import start_server

        start_server()

    from study.runner import run_study

    check_storage(storage, args.heartbeat)  # reachable and understood, before any worker starts
    cfg = auto_lr(cfg, storage, device)
    interrupts.check()
    summary = run_study(cfg, storage, device, checkpoint_root=args.checkpoint_dir, quiet=args.quiet,
                        jobs=args.jobs, heartbeat_s=args.heartbeat, retry_stale=args.retry_stale)
    say(summary.text())
    interrupts.check()  # Ctrl-C as the run ended: the study is stored; the rerun writes the report
    from study.dashboard import upload_checkpoint

    artifacts = args.artifact_dir if args.artifact_dir.is_dir() else None  # only where the user made one
    if artifacts and upload_checkpoint(summary.study, summary.study_dir / "best.pt", artifacts):
        say(f"artifacts: {artifacts.resolve()}")
    if not args.no_report and not write_report(summary.study, args.report_dir, artifacts):
        return 1
    return 1 if summary.stopped else 0


def auto_lr(cfg, storage_url: str, device):
    """A space whose lr says `range: auto`: the range stored with its study, else a fresh LR range test."""
    from study import lrfind

    if not lrfind.needs(cfg):
        return cfg
    import optuna

    from study.records import StudyRecord
    from study.storage import open_storage

    storage = open_storage(storage_url)
    if cfg.study.name in optuna.get_all_study_names(storage):
        stored = StudyRecord.of(optuna.load_study(study_name=cfg.study.name, storage=storage)).lr_range
        if stored:
            return lrfind.resolve(cfg, stored)
    found = lrfind.union(lrfind.find(cfg, device))
    say(f"lr range test: lr in [{found['low']:.3g}, {found['high']:.3g}] ("
        + ", ".join(f"{k} {r['low']:.3g}-{r['high']:.3g}" for k, r in found["by_optimizer"].items()) + ")")
    return lrfind.resolve(cfg, found)


def lr_find(args: argparse.Namespace) -> int:
    """`study lr-find SPACE`: the LR range test for each optimizer of the space; prints the suggested
    ranges and draws the curves to <report-dir>/<name>/lr-find.png."""
    from study import lrfind
    from study.config import load_config
    from study.devices import resolve_device
    from study.files import check_writable
    from study.paths import child
    from study.preflight import check_inside
    from study.report.figures import lr_find_figure, to_png

    device = resolve_device(args.device)
    cfg = load_config(args.space, list(args.overrides))
    check_writable(args.report_dir, "--report-dir")
    check_inside(args.report_dir, cfg.study.name, "--report-dir")
    found = lrfind.find(cfg, device, args.iterations)
    for name, r in found.items():
        say(f"{name:<14} loss falls fastest at lr {r['steepest']:.3g}, lowest at {r['high']:.3g}: "
            f"suggested range [{r['low']:.3g}, {r['high']:.3g}]")
    folder = child(args.report_dir, cfg.study.name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lr-find.png").write_bytes(to_png(lr_find_figure(found)))
    say(f"figure: {(folder / 'lr-find.png').resolve()}")
    say("a space whose lr says {type: float, log: true, range: auto} gets these ranges' union when its study "
        "is created")
    return 0


def write_report(study, out: Path, artifact_dir: Path | None) -> bool:
    """Build the report and print its path, and the commands that retrain the best trial and, where it is
    another trial, the verdict's leader; a failed write (a full disk) is one error line, not a crash: the
    study is stored, only the page is missing."""
    from study.report import build_report
    from study.report.page import NoteNotSaved

    note = None
    try:
        try:
            page = build_report(study, out, artifact_dir=artifact_dir)
        except NoteNotSaved as exc:
            page, note = exc.page, str(exc)
        say(f"report: {page}")
        if (page.parent / "best.yaml").is_file():
            say(f"reproduce the best trial: python -m study run {shlex.quote(str(page.parent / 'best.yaml'))}")
        if (page.parent / "leader.yaml").is_file():
            say(f"reproduce the verdict's leader: python -m study run {shlex.quote(str(page.parent / 'leader.yaml'))}")
    except OSError as exc:
        print(f"error: the report was not written: {exc.strerror or exc}", file=sys.stderr)
        return False
    if note is not None:
        print(f"warning: the report is written, but the storage took no dashboard note linking it: {note}",
              file=sys.stderr)
    return True


def open_existing(storage_url: str | None):
    """The storage, which must already exist: reading never creates a database."""
    from study.storage import check_storage, default_storage

    url = storage_url or default_storage()
    return url, check_storage(url, must_exist=True)


def list_studies(args: argparse.Namespace) -> int:
    from study.catalog import summaries
    from study.storage import shown

    url, storage = open_existing(args.storage)
    rows = summaries(storage)
    if not rows:
        say(f"no studies in {printable(shown(url))}")
    for r in rows:
        best = "no complete trial"
        if r["best_trial"] is not None:
            best = f"best {r['metric']}={r['best']:.4g} (trial {r['best_trial']})"
        counts = ", ".join(f"{r[k]} {k}" for k in ("complete", "pruned", "diverged", "failed")) + "".join(
            f", {r[k]} {k}" for k in ("interrupted", "running", "waiting") if r[k])
        runs = r["confirm"]
        confirmed = "" if not any(runs.values()) else "; confirmation runs: " + ", ".join(
            f"{n} {k}" for k, n in runs.items() if n or k in ("complete", "diverged", "failed"))
        many = r["gone"] > 1
        gone = (f"; {r['gone']} running {'trials were' if many else 'trial was'} left by a worker of this machine's "
                f"that is gone: `study run` again retries {'them' if many else 'it'}") if r["gone"] else ""
        say(f"{printable(r['name']):<24} {counts}; {best}{confirmed}{gone}")
    return 0


def stored_study(storage_url: str | None, study_name: str | None, flag: str = "--study-name"):
    """The one study of an existing storage, or the one named (by `flag`): (url, study); one clear line
    otherwise."""
    import optuna

    from study.errors import ConfigError
    from study.storage import shown

    url, storage = open_existing(storage_url)
    names = optuna.get_all_study_names(storage)
    stored = ", ".join(map(printable, names))
    name = study_name
    if name is None:
        if len(names) != 1:
            raise ConfigError("--study-name", "study-name", None,
                              f"the storage holds {len(names)} studies ({stored or 'none'}); name one")
        name = names[0]
    if name not in names:
        raise ConfigError(flag, flag.lstrip("-"), name, f"no such study in {printable(shown(url))}; stored: {stored}")
    return url, optuna.load_study(study_name=name, storage=storage)


def report(args: argparse.Namespace) -> int:
    import optuna

    from study.files import check_writable
    from study.preflight import check_inside

    # Optuna's INFO lines (such as the in-memory study that importance is fitted on) are not the user's news.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_writable(args.out, "--out")
    if args.compare:
        return compare(args)
    url, study = stored_study(args.storage, args.study_name)
    check_inside(args.out, study.study_name, "--out")
    return 0 if write_report(study, args.out, args.artifact_dir if args.artifact_dir.is_dir() else None) else 1


def compare(args: argparse.Namespace) -> int:
    """`report --compare A B ...`: one page with the studies side by side."""
    from study.errors import ConfigError
    from study.report.compare import build_comparison

    names = list(dict.fromkeys(args.compare))
    if len(names) < 2:  # a page of one study beside nothing: that study's own report is what was meant
        raise ConfigError("--compare", "compare", args.compare,
                          "names one study; give two or more, or `study report --study-name NAME` for one")
    studies = [stored_study(args.storage, name, "--compare")[1] for name in names]
    say(f"report: {build_comparison(studies, args.out)}")
    return 0


def confirm(args: argparse.Namespace) -> int:
    """The confirmation phase alone, on a stored study: its space is the one stored with it."""
    from study import preflight
    from study.config import stored_config
    from study.devices import resolve_device
    from study.errors import ConfigError
    from study.records import StudyRecord
    from study.runner import run_study

    device = resolve_device(args.device)
    url, study = stored_study(args.storage, args.study_name)
    record = StudyRecord.of(study)
    if not record.space:
        raise ConfigError("--study-name", "study-name", study.study_name,
                          "was not made by `study run`: it has no search space to confirm")
    # a stored timeout was the budget of the `run` command that made the study, not this command's
    overrides = [("study.name", study.study_name), ("study.timeout", args.timeout)] + [
        (f"study.confirm.{k}", getattr(args, k)) for k in ("top", "seeds") if getattr(args, k) is not None]
    if args.vary_split:
        overrides.append(("study.confirm.vary_split", True))
    cfg = stored_config(record.space, record.source or url, overrides)
    if record.lr_range:
        from study import lrfind

        cfg = lrfind.resolve(cfg, record.lr_range)
    if not cfg.params:
        raise ConfigError("--study-name", "study-name", study.study_name,
                          "searches no params: its trials are one config, chosen by nothing, so there is nothing "
                          "to confirm")
    preflight.check(cfg, checkpoint_root=args.checkpoint_dir,
                    report_dir=None if args.no_report else args.report_dir, storage_url=url, device=device)
    interrupts.check()  # a stop asked for during the imports: before anything is written
    summary = run_study(cfg, url, device, checkpoint_root=args.checkpoint_dir, quiet=args.quiet, jobs=args.jobs,
                        search=False)
    say(summary.text())
    interrupts.check()
    if not args.no_report and not write_report(summary.study, args.report_dir, None):
        return 1
    return 1 if summary.stopped else 0


def serve_storage(args: argparse.Namespace) -> int:
    from study.proxy import serve_storage

    serve_storage(args.storage, args.host, args.port)
    return 0


def dashboard(args: argparse.Namespace) -> int:
    from study.dashboard import serve
    from study.ports import HOST, check_port
    from study.storage import shown

    check_port(args.port)
    url, storage = open_existing(args.storage)
    print(f"optuna-dashboard for {printable(shown(url))} at http://{HOST}:{args.port}/ (Ctrl-C stops it)", flush=True)
    with interrupts.handled():
        serve(storage, args.port, args.artifact_dir)
    return 0

