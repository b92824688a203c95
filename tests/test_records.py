"""The trial and study records: one schema that the runner writes and the summary, report and tests read."""
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from study import records
from study.records import FIELDS, StudyRecord, TrialRecord, first_number, status_of


def test_a_record_written_to_a_live_trial_reads_back_from_the_storage():
    study = optuna.create_study()
    trial = study.ask()
    records.write(trial, first_number=0, config={"lr": 0.1}, history=[{"epoch": 0, "val_loss": 1.5}],
                  resumed={"from_trial": 0, "from_epoch": 1})
    study.tell(trial, 1.5)
    got = TrialRecord.of(study.trials[0])
    assert got == TrialRecord(first_number=0, config={"lr": 0.1}, history=[{"epoch": 0, "val_loss": 1.5}],
                              resumed={"from_trial": 0, "from_epoch": 1})
    assert got.final == {"epoch": 0, "val_loss": 1.5} and TrialRecord().final == {}


def test_a_field_outside_the_schema_is_refused_before_anything_is_written():
    study = optuna.create_study()
    trial = study.ask()
    with pytest.raises(KeyError, match="'histroy'"):
        records.write(trial, config={}, histroy=[])
    assert study.trials[0].user_attrs == {}
    with pytest.raises(KeyError, match="'colour'"):
        records.write_study(study, colour="red")


@pytest.mark.parametrize("device, counts, expected", [
    ("cpu", (2, 2), 2),
    ("cpu", (1, 2), None),  # resumed on another count: no one count reproduces it
    ("cuda:0", (2, 2), None),  # threads do not reach a GPU's sums
    ("cpu", (None, None), None),  # recorded before threads were
])
def test_a_trials_threads_are_the_one_count_its_epochs_trained_on_a_cpu(device, counts, expected):
    history = [{"epoch": e} | ({} if n is None else {"threads": n}) for e, n in enumerate(counts)]
    assert TrialRecord(provenance={"device": device}, history=history).threads == expected
    assert TrialRecord().threads is None


def test_a_trial_of_another_era_with_attrs_that_are_not_set_reads_as_the_defaults():
    t = create_trial(state=TrialState.FAIL, user_attrs={"history": None, "unrelated": 1})
    assert TrialRecord.of(t) == TrialRecord()


@pytest.mark.parametrize("state, marks, expected", [
    (TrialState.COMPLETE, {}, "complete"),
    (TrialState.PRUNED, {}, "pruned"),
    (TrialState.PRUNED, {"diverged": {"reason": "inf", "step": 3}}, "diverged"),
    (TrialState.FAIL, {}, "failed"),
    (TrialState.FAIL, {"interrupted": True}, "interrupted"),
    (TrialState.FAIL, {"surplus": True, "interrupted": True}, "surplus"),  # surplus takes precedence
    (TrialState.WAITING, {}, "waiting"),
])
def test_status_is_optunas_state_refined_by_the_marks_a_run_leaves(state, marks, expected):
    value = 1.0 if state == TrialState.COMPLETE else None
    t = create_trial(state=state, value=value, user_attrs=records.attrs(**marks))
    assert status_of(t) == expected
    assert (expected in records.FINISHED) == (state in records.FINISHED_STATES and not marks.get("surplus"))


@pytest.mark.parametrize("stored", [-1, 5, "0", 1.0, True, None])
def test_a_first_number_read_back_is_trusted_only_as_a_trial_number_not_above_the_trials_own(stored):
    study = optuna.create_study()
    for _ in range(3):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=1.0, params={"x": 0.5},
                                     distributions={"x": FloatDistribution(0, 1)}))
    study.enqueue_trial({"x": 0.5}, user_attrs={"first_number": stored})
    t = study.trials[-1]
    assert first_number(t) == t.number == 3
    records.queue_retry(study, study.trials[1])
    assert study.trials[-1].state == TrialState.WAITING and study.trials[-1].user_attrs == {"first_number": 1}


def test_best_trial_is_none_before_the_first_complete_one():
    study = optuna.create_study()
    assert records.best_trial(study) is None
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.3))
    assert records.best_trial(study).value == 0.3


def test_the_study_record_reads_what_was_written_and_defaults_the_rest():
    study = optuna.create_study()
    records.write_study(study, metric="val_f1", scientific=["init"])
    got = StudyRecord.of(study)
    assert (got.metric, got.scientific, got.question, got.test) == ("val_f1", ["init"], "", None)
    assert StudyRecord.of(optuna.create_study()).metric == "value"  # not made by `study run`: its objective


def test_the_schema_names_every_mark_that_status_reads():
    assert set(records.MARKS) <= set(FIELDS)
