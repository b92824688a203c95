"""The summary a run prints: the best search trial beside what its confirmation seeds gave."""
from conftest import confirmed_study
from study.config import load_config
from study.summary import RunSummary


def test_the_best_trial_line_says_what_its_confirmation_seeds_gave(tmp_path):
    """lecture's best search trial (0.118, one seed) stayed at chance on 2 of its 3 confirmation seeds: the
    summary printed it as the best with nothing beside it but the verdict's sentence."""
    study = confirmed_study({0: (2.30, 0.21, 2.31), 1: (0.26, 0.25, 0.27)})
    text = RunSummary(study, load_config("quick"), "sqlite://", tmp_path).text().splitlines()
    at = next(i for i, line in enumerate(text) if line.startswith("best trial 0 (search, one seed: optimistic)"))
    assert text[at + 2] == "  confirmed: 1.61 [0, 4.61] over 3 seeds; it fails (chance on 2 of 3 seeds)"


def test_a_best_trial_without_confirmation_runs_gets_no_such_line(tmp_path):
    study = confirmed_study({1: (0.26, 0.25, 0.27)})
    text = RunSummary(study, load_config("quick"), "sqlite://", tmp_path).text()
    assert "best trial 0 " in text and "confirmed:" not in text


def test_a_best_trial_confirmed_beside_a_better_candidate_of_its_arm_still_shows_its_seeds(tmp_path):
    """--confirm-top 2 confirms two trials of arm a: the verdict represents a by the other, whose seeds did
    better, but the best trial's own seeds are what the line beside it must say."""
    study = confirmed_study({0: (0.30, 0.31, 0.29), 2: (0.2, 0.21, 0.19), 1: (0.26, 0.25, 0.27)},
                            searched=(("a", 0.2), ("b", 0.25), ("a", 0.22)))
    text = RunSummary(study, load_config("quick"), "sqlite://", tmp_path).text()
    assert "best trial 0 " in text and "  confirmed: 0.3 [0.275, 0.325] over 3 seeds\n" in text


def test_a_trial_line_shows_a_value_near_zero_or_far_past_one_by_its_digits():
    """Four decimals hid a loss of 3.2e-05 as 0.0000, and buried a diverged one in 88297824256.0000."""
    from optuna.trial import TrialState, create_trial

    from study.summary import trial_line

    shown = [trial_line(create_trial(state=TrialState.COMPLETE, value=v), "val_loss").split()[3]
             for v in (3.2e-05, 0.0615, 2.3026, 88297824256.0, 0.0)]
    assert shown == ["val_loss=3.2e-05", "val_loss=0.0615", "val_loss=2.3026", "val_loss=8.83e+10", "val_loss=0.0000"]
