"""`study run --engine population` as a user runs it, on a real SQLite storage: the runs that are killed or
signalled, and `--jobs`, as real processes; the others through main() in this process (call_cli)."""
import re
import signal

import pandas as pd
import pytest

from optuna.trial import TrialState

from conftest import RERUN, SYNTH_SPACE, call_cli, finished, run_cli, start, trials, wait_for
from study.records import FIELDS, TrialRecord, status_of

DROPOUT_MODEL = """\
import torch


def net(input_shape, n_classes):
    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], 16), torch.nn.Dropout(0.2),
                               torch.nn.Linear(16, n_classes))


class Net(torch.nn.Module):  # its own forward, which vmap runs, fed each member's masks
    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(input_shape[0], 16), torch.nn.Linear(16, n_classes)
        self.dropout = torch.nn.Dropout(0.2)

    def forward(self, x):
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


class Noisy(torch.nn.Module):  # F.dropout in its forward: no module to feed, and vmap's is not per member
    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(input_shape[0], n_classes)

    def forward(self, x):
        return self.linear(torch.nn.functional.dropout(x, 0.2, self.training))
"""


def test_a_population_run_reaches_exactly_its_target_and_stores_what_a_sequential_one_does(tmp_path, synth_space):
    result = call_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--engine", "population",
                      "--population", "4", "--trials", "6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path)
    counted = [t for t in ts if status_of(t) != "surplus"]
    assert len(finished(ts)) == 6 and len(counted) == 6  # the refill asks only while the target has room
    for t in counted:
        record = TrialRecord.of(t)
        assert set(t.user_attrs) <= set(FIELDS) and record.engine["name"] == "population"
        assert len(record.history) == 3 and sorted(t.intermediate_values) == [0, 1, 2]
        assert record.config["dataset"] == "synthetic" and record.budget["total_iters"] > 0
    assert len({TrialRecord.of(t).engine["population"] for t in counted}) == 1  # refilled, not restarted
    page = (tmp_path / "reports" / "synth" / "index.html").read_text()
    assert "the population engine (6 trials, cpu, 1 thread)" in page


def _page_lines(page) -> list[str]:
    """The report's text, a line per element (figures are compared by their titles and captions)."""
    return [line.strip() for line in re.sub(r"<[^>]+>", "\n", page.read_text()).splitlines() if line.strip()]


def test_a_study_trained_either_way_gives_the_same_report_but_for_the_engine_line(tmp_path, synth_space):
    """The seeded random sampler asks the same trials of both engines; then every stored value agrees to
    float rounding, and the page differs only where it says which engine ran, how long trials took and
    where the checkpoints are."""
    pages, frames = {}, {}
    for engine, extra in (("sequential", []), ("population", ["--population", "3"])):
        (tmp_path / engine).mkdir()
        result = call_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--engine", engine, *extra,
                          "--trials", "6", cwd=tmp_path / engine)
        assert result.returncode == 0, result.stderr
        pages[engine] = _page_lines(tmp_path / engine / "reports" / "synth" / "index.html")
        frames[engine] = pd.read_csv(tmp_path / engine / "reports" / "synth" / "trials.csv")
    seq, pop = frames["sequential"], frames["population"]
    numeric = [c for c in seq.columns if c != "duration_s" and pd.api.types.is_float_dtype(seq[c])]
    exact = ["duration_s", *numeric]
    pd.testing.assert_frame_equal(seq.drop(columns=exact), pop.drop(columns=exact))
    pd.testing.assert_frame_equal(seq[numeric], pop[numeric], rtol=1e-4)
    durations = {f"{v:.4g}" for frame in frames.values() for v in frame["duration_s"]}
    assert len(pages["sequential"]) == len(pages["population"])
    differ = [(a, b) for a, b in zip(pages["sequential"], pages["population"], strict=True) if a != b]
    assert ("the sequential engine (6 trials, cpu, 1 thread)", "the population engine (6 trials, cpu, 1 thread)") \
        in differ
    for a, b in differ:
        assert (a.endswith(" s mean") or "load_best(" in a or "engine" in a or {a, b} <= durations), (a, b)


def test_a_population_reads_the_study_per_batch_of_trials_not_per_trial(tmp_path, synth_space, monkeypatch):
    """Each read of the study re-reads every unfinished trial: reading it to ask for each trial made a
    population's asks cost K x K. Its confirmation runs (all queued, all unfinished) now take fewer reads
    than there are runs."""
    from study.cli import main
    from study.worker import Worker

    common = ["--storage", f"sqlite:///{tmp_path}/s.db", "--no-report", "--checkpoint-dir", str(tmp_path), "-q"]
    assert main(["run", str(synth_space), *common, "--trials", "4"]) == 0
    reads = []
    monkeypatch.setattr(Worker, "_taken", lambda self, read=Worker._taken: reads.append(1) or read(self))
    assert main(["confirm", "--top", "1", "--seeds", "6", *common]) == 0
    runs = [t for t in trials(tmp_path) if TrialRecord.of(t).confirm]
    assert len(runs) == 12 and all(t.state == TrialState.COMPLETE for t in runs)
    assert {TrialRecord.of(t).engine["name"] for t in runs} == {"population"}
    assert len(reads) < len(runs)


def test_a_population_runs_a_confirmation_run_queued_twice_once_and_every_planned_run(tmp_path, synth_space):
    """Two processes that finish a search at one instant can both queue its plan, interleaved: each run
    twice in a row. A population then trains each (candidate, seed) once, fails its copy as surplus, and
    leaves no run of the plan unrun and no copy waiting."""
    import optuna

    from study import confirm
    from study.cli import main

    common = ["--storage", f"sqlite:///{tmp_path}/s.db", "--no-report", "--checkpoint-dir", str(tmp_path), "-q"]
    assert main(["run", str(synth_space), *common, "--trials", "4"]) == 0
    study = optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path}/s.db")
    enqueue = study.enqueue_trial
    study.enqueue_trial = lambda params, user_attrs: [enqueue(params, user_attrs=user_attrs) for _ in range(2)]
    plan = confirm.queue(study, top=1, seeds=3, vary_split=False)
    assert main(["confirm", "--top", "1", "--seeds", "3", *common]) == 0
    runs = [t for t in trials(tmp_path) if TrialRecord.of(t).confirm]
    assert len(runs) == 2 * len(plan) == 12
    ran = sorted((TrialRecord.of(t).confirm["of"], TrialRecord.of(t).confirm["seed"])
                 for t in runs if status_of(t) == "complete")
    assert ran == sorted((r["of"], r["seed"]) for r in plan)
    assert [status_of(t) for t in runs].count("surplus") == len(plan)
    assert {TrialRecord.of(t).engine["name"] for t in runs if status_of(t) == "complete"} == {"population"}


@pytest.mark.parametrize("model", ["net", "Net"], ids=["sequential", "own forward"])
def test_a_model_with_dropout_trains_in_populations_and_stores_what_it_does_alone(tmp_path, write_space, model):
    """Each member's dropout masks come from its own seeded stream, so both engines store the same values."""
    space = write_space(SYNTH_SPACE.replace("name: mlp", f"name: dropmodel:{model}"))
    values = {}
    for engine in ("sequential", "population"):
        (tmp_path / engine).mkdir()
        (tmp_path / engine / "dropmodel.py").write_text(DROPOUT_MODEL)
        result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--engine", engine, "--trials", "4",
                          "--set", "study.confirm.seeds=0", "--no-report", "--checkpoint-dir", "ck",
                          cwd=tmp_path / engine)
        assert result.returncode == 0, result.stderr
        ts = finished(trials(tmp_path / engine))
        assert {(TrialRecord.of(t).engine or {}).get("name", "sequential") for t in ts} == {engine}
        values[engine] = [list(t.intermediate_values.values()) for t in ts]
    assert len(values["population"]) == 4
    for seq, pop in zip(values["sequential"], values["population"], strict=True):
        assert pop == pytest.approx(seq, rel=1e-5)


def test_a_model_that_cannot_run_under_vmap_trains_alone_and_says_why(tmp_path, write_space):
    (tmp_path / "dropmodel.py").write_text(DROPOUT_MODEL)
    space = write_space(SYNTH_SPACE.replace("name: mlp", "name: dropmodel:Noisy"))
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--engine", "population", "--trials", "3",
                      "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for t in finished(trials(tmp_path)):
        engine = TrialRecord.of(t).engine
        assert engine["name"] == "sequential" and "vmap" in engine["reason"]
        assert "only nn.Dropout modules" in engine["reason"]  # F.dropout in its forward: what would fuse


FAILING_MODEL = """\
import torch

steps = 0


class Failing(torch.nn.Module):  # runs under vmap, then raises in its fifth training step
    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(input_shape[0], n_classes)

    def forward(self, x):
        global steps
        if torch.is_grad_enabled():
            steps += 1
            if steps > 4:
                raise RuntimeError("boom in step " + str(steps))
        return self.linear(x)
"""


def test_a_fused_step_that_raises_fails_its_members_and_the_study_goes_on(tmp_path, write_space):
    """As a trial that raises does in the sequential engine: each member fails with the error stored, and
    max_initial_failures stops the run. It used to end the command with a traceback, its trials left running."""
    (tmp_path / "failing.py").write_text(FAILING_MODEL)
    space = write_space(SYNTH_SPACE.replace("name: mlp", "name: failing:Failing"))
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--engine", "population", "--population",
                      "4", "--trials", "20", "--no-report", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "stopped: 8 trials in a row failed; last error: RuntimeError: boom in step" in result.stdout
    ts = trials(tmp_path)
    assert len(ts) == 8 and all(t.state == TrialState.FAIL for t in ts)
    assert all(TrialRecord.of(t).error.startswith("RuntimeError: boom in step") for t in ts)
    # the first population fails in its fifth step; the next one's probe finds the model failing, before any
    # step, so its members train one by one, and fail there
    assert [TrialRecord.of(t).engine["name"] for t in ts] == ["population"] * 4 + ["sequential"] * 4


def test_a_killed_population_worker_s_trials_are_retried_from_their_checkpoints(tmp_path, slow_space):
    first = start(slow_space, tmp_path, "--trials", "3", "-q", "--engine", "population", "--population", "3")
    wait_for(tmp_path, "checkpoints/synth-*/trial-2/epoch-0002.pt", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert [t.state for t in trials(tmp_path)] == [TrialState.RUNNING] * 3  # what the dead worker left

    second = call_cli("run", str(slow_space), *RERUN, "--trials", "3", "--engine", "population", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    ts = trials(tmp_path)
    assert [t.state for t in ts[:3]] == [TrialState.FAIL] * 3 and len(finished(ts)) == 3
    resumed = [TrialRecord.of(t).resumed for t in finished(ts)]
    assert all(r and r["from_epoch"] >= 3 for r in resumed)
    assert all([h["epoch"] for h in TrialRecord.of(t).history] == list(range(8)) for t in finished(ts))


def test_sigterm_stops_a_population_cleanly_and_the_rerun_resumes_every_member(tmp_path, slow_space):
    first = start(slow_space, tmp_path, "--trials", "2", "-q", "--engine", "population", "--population", "2")
    wait_for(tmp_path, "checkpoints/synth-*/trial-1/epoch-0001.pt", first)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130 and "Traceback" not in err
    ts = trials(tmp_path)
    assert [status_of(t) for t in ts] == ["interrupted", "interrupted", "waiting", "waiting"]

    again = call_cli("run", str(slow_space), *RERUN, "--trials", "2", "-q", "--engine", "population", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    done = finished(trials(tmp_path))
    assert len(done) == 2 and all(TrialRecord.of(t).resumed["from_epoch"] >= 2 for t in done)


def test_two_population_workers_reach_exactly_the_target(tmp_path, synth_space):
    result = run_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--engine", "population",
                     "--population", "3", "--jobs", "2", "--trials", "8", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path)
    assert len(finished(ts)) == 8
    firsts = [TrialRecord.of(t).first_number for t in finished(ts)]
    assert len(firsts) == len(set(firsts))


def test_trials_of_another_graph_wait_for_a_population_of_their_own(tmp_path, write_space):
    """Two batch sizes, two graphs: every trial trains in a population of its own batch size, none alone
    for having been asked while a population of the other graph was training."""
    space = write_space(SYNTH_SPACE.replace("  lr: {type", "  batch_size: {choices: [16, 32]}\n  lr: {type"))
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--engine", "population", "--population",
                      "3", "--trials", "10", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    done = finished(trials(tmp_path))
    assert len(done) == 10
    batches: dict[str, set] = {}
    for t in done:
        engine = TrialRecord.of(t).engine
        assert engine["name"] == "population" or engine["reason"] == "a population of one", engine
        if engine["name"] == "population":
            batches.setdefault(engine["population"], set()).add(t.params["batch_size"])
    assert all(len(b) == 1 for b in batches.values()) and len(batches) >= 2


def test_a_probe_that_finds_room_for_fewer_trials_sizes_the_populations_to_it(tmp_path, synth_space, monkeypatch,
                                                                              capsys):
    """On CUDA, population.fitting measures how many members fit (tests/test_cuda.py); a CPU has no free
    memory to measure, so here it finds room for two of the four asked for."""
    import study.pool as pool
    from study.cli import main

    monkeypatch.setattr(pool, "fitting", lambda p, cap, share: min(cap, 2))
    assert main(["run", str(synth_space), "--storage", f"sqlite:///{tmp_path}/s.db", "--engine", "population",
                 "--population", "4", "--trials", "6", "--no-report", "--checkpoint-dir", str(tmp_path)]) == 0
    assert "fits 2 trials of this model at once: populations of 2" in capsys.readouterr().out
    done = finished(trials(tmp_path))
    assert len(done) == 6 and {TrialRecord.of(t).engine["size"] for t in done} == {2}


def test_each_graph_s_first_population_is_sized_by_its_own_probe(tmp_path, write_space, monkeypatch, capsys):
    """Only the first population was probed: a wider graph after it ran at the narrow one's K, past the
    memory that a CPU cannot back off from. Here the probe finds room for two of the wide trials."""
    import study.pool as pool
    from study.cli import main

    probed = []

    def fitting(p, cap, share):
        probed.append(p.cfg.width)
        return cap if p.cfg.width == 8 else min(cap, 2)

    monkeypatch.setattr(pool, "fitting", fitting)
    space = write_space(SYNTH_SPACE.replace("  width: 16\n", "").replace(
        "  lr: {type", "  width: {choices: [8, 32]}\n  lr: {type"))
    assert main(["run", str(space), "--storage", f"sqlite:///{tmp_path}/s.db", "--engine", "population",
                 "--population", "4", "--trials", "12", "--no-report", "--checkpoint-dir", str(tmp_path)]) == 0
    assert sorted(probed) == [8, 32]  # once per graph
    assert "fits 2 trials of this model at once: populations of 2" in capsys.readouterr().out
    wide = [t for t in finished(trials(tmp_path)) if t.params["width"] == 32]
    assert wide and all(TrialRecord.of(t).engine["size"] <= 2 for t in wide)


def test_a_space_of_many_graphs_confirms_each_candidate_s_seeds_as_one_population(tmp_path, write_space):
    """Widths from 4 to 64: the search trains one trial at a time (few of its trials would share a graph),
    yet each candidate's confirmation runs share its width, and train as one population."""
    space = write_space(SYNTH_SPACE.replace("  width: 16\n", "").replace(
        "  lr: {type", "  width: {type: int, low: 4, high: 64}\n  lr: {type").replace(
        "  confirm: {seeds: 0}", "  scientific: [optimizer]\n  confirm: {top: 1, seeds: 3}  #"))
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--trials", "4", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "search: sequential engine, one trial at a time (auto: " in result.stdout
    assert "confirmation runs: population engine, 6 trials at a time (auto: 6 confirmation runs of 2 graphs, " \
           "a population holding one graph's runs)" in result.stdout
    runs = [t for t in finished(trials(tmp_path)) if TrialRecord.of(t).confirm]
    assert len(runs) == 6
    populations: dict[str, set] = {}
    for t in runs:
        record = TrialRecord.of(t)
        assert record.engine["name"] == "population", record.engine
        populations.setdefault(record.engine["population"], set()).add((record.confirm["of"], t.params["width"]))
    assert sorted(len(p) for p in populations.values()) == [1, 1]  # one candidate, so one width, each
