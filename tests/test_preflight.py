"""Bad data, models, budgets and output folders are refused before a study is created: one line naming
the file or flag, the key and the value, exit status 2, and nothing written."""
import os
import subprocess

import pytest

from conftest import SYNTH_SPACE, call_cli, run_cli, tmpfs

USER_CODE = """\
import numpy as np
import torch


def tiny():
    return np.zeros((3, 4)), np.array([0, 1, 0])


def nan_features(n=60):
    x = np.random.default_rng(0).normal(size=(n, 4))
    x[5, 2] = np.nan
    return x, np.arange(n) % 2


def inf_features(n=60):
    x = np.random.default_rng(0).normal(size=(n, 4))
    x[7, 0] = np.inf
    return x, np.arange(n) % 2


def labels_1_2(n=60):
    return np.random.default_rng(0).normal(size=(n, 4)), 1 + np.arange(n) % 2


def labels_with_a_gap(n=60):
    return np.random.default_rng(0).normal(size=(n, 4)), (np.arange(n) % 2) * 2


def float_labels(n=60):
    return np.random.default_rng(0).normal(size=(n, 4)), (np.arange(n) % 2) * 1.5


def five_outputs(input_shape, n_classes):
    return torch.nn.Linear(input_shape[0], 5)


def not_a_module(input_shape, n_classes):
    return "a string"


def frozen(input_shape, n_classes):  # a pretrained head with nothing left to train
    return torch.nn.Linear(input_shape[0], n_classes).requires_grad_(False)


class NanLogits(torch.nn.Module):
    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(input_shape[0], n_classes)

    def forward(self, x):
        return self.linear(x) * float("nan")
"""


def refused(result: subprocess.CompletedProcess, cwd, before: set, *fragments: str) -> str:
    """Exit 2, one line on stderr with every fragment, no traceback, nothing new in the folder."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert set(os.listdir(cwd)) == before, "bad input must create nothing"
    return lines[0]


@pytest.fixture
def user_space(tmp_path, write_space):
    (tmp_path / "usercode.py").write_text(USER_CODE)
    return lambda change: write_space(SYNTH_SPACE.replace("budget: 3", "budget: 2") + change, "user.yaml")


def _with(space_text: str, section: str, lines: str) -> str:
    return space_text.replace(f"{section}:\n", f"{section}:\n{lines}", 1)


@pytest.mark.parametrize("dataset, key, fragments", [
    ("usercode:tiny", "data.name", ["too small to split", "3 samples"]),
    ("usercode:nan_features", "data.name", ["NaN or infinite features", "1 samples"]),
    ("usercode:inf_features", "data.name", ["NaN or infinite features"]),
    ("usercode:labels_1_2", "data.name", ["labels 0..K-1", "got {1, 2}"]),
    ("usercode:labels_with_a_gap", "data.name", ["labels 0..K-1", "got {0, 2}"]),
    ("usercode:float_labels", "data.name", ["integer labels"]),
])
def test_a_bad_user_dataset_is_refused_before_the_study(tmp_path, write_space, dataset, key, fragments):
    (tmp_path / "usercode.py").write_text(USER_CODE)
    space = write_space(SYNTH_SPACE.replace("name: synthetic\n  options: {n_samples: 160, n_features: 8, n_classes: 3}",
                                            f"name: {dataset}"))
    before = set(os.listdir(tmp_path))
    line = refused(call_cli("run", str(space), cwd=tmp_path), tmp_path, before,
                   str(space), key, *fragments)
    assert dataset in line


@pytest.mark.parametrize("model, fragments", [
    ("usercode:five_outputs", ["logits of shape (2, 3) for 3 classes", "returned (2, 5)"]),
    ("usercode:not_a_module", ["not a torch.nn.Module"]),
    # each failed every trial, five of them before the run stopped, or diverged every trial, exit 0
    ("usercode:frozen", ["the model has no parameter to train (none, or each with requires_grad False)"]),
    ("usercode:NanLogits", ["the model's logits for two training samples are nan before any training"]),
])
def test_a_user_model_that_cannot_train_is_refused(tmp_path, write_space, model, fragments):
    (tmp_path / "usercode.py").write_text(USER_CODE)
    space = write_space(SYNTH_SPACE.replace("name: mlp", f"name: {model}"))
    before = set(os.listdir(tmp_path))
    refused(call_cli("run", str(space), cwd=tmp_path), tmp_path, before,
            "model.name", *fragments)


def test_a_budget_of_more_than_a_billion_iterations_needs_an_opt_in(tmp_path, write_space):
    space = write_space(SYNTH_SPACE.replace("budget: 3", "budget_unit: iterations\n  budget: 2000000000"))
    before = set(os.listdir(tmp_path))
    refused(call_cli("run", str(space), cwd=tmp_path), tmp_path, before, "training.budget", "2e+09 iterations",
            "study.max_iters")
    # a searched budget is judged by its largest value, at the smallest batch
    searched = write_space(SYNTH_SPACE + "  budget: {type: int, low: 1, high: 100000000}\n"
                           "  batch_size: {choices: [1, 64]}\n", "searched.yaml")
    refused(call_cli("run", str(searched), cwd=tmp_path), tmp_path, before | {"searched.yaml"},
            "at batch size 1 plans 9.6e+09 iterations")
    from study.config import load_config
    from study.preflight import check_budget

    check_budget(load_config(str(space), ["study.max_iters=3000000000"]), n_train=96)  # the opt-in


def test_a_space_that_searches_nothing_trains_one_trial_not_many_copies_of_it(tmp_path, write_space):
    """An empty file ran its default 20 trials, each the same config with the same seed: 20 times one
    val_loss. One trial is what such a space can give."""
    before = set(os.listdir(tmp_path))
    space = write_space(SYNTH_SPACE.split("params:")[0])  # its settings, nothing searched; n_trials: 3
    refused(call_cli("run", str(space), cwd=tmp_path), tmp_path, before | {space.name}, "study.n_trials",
            "searches no params", "give 1 (--trials 1)", "(got 3)")
    empty = write_space("", "empty.yaml")
    refused(call_cli("run", str(empty), cwd=tmp_path), tmp_path, before | {space.name, empty.name},
            "empty.yaml: study.n_trials", "(got 20)")
    from study.config import load_config
    from study.preflight import check_trials

    check_trials(load_config(str(space), ["study.n_trials=1"]))


def test_a_batch_larger_than_the_training_split_is_refused(tmp_path, write_space):
    """It trained on the whole split each step while its config said otherwise, and linear lr scaling
    scaled the lr for samples that were not there."""
    before = set(os.listdir(tmp_path))
    space = write_space(SYNTH_SPACE.replace("batch_size: 32", "batch_size: 97"))  # 160 samples: 96 train
    refused(call_cli("run", str(space), cwd=tmp_path), tmp_path, before | {space.name}, "training.batch_size",
            "larger than the training split's 96 samples", "(got 97)")
    searched = write_space(SYNTH_SPACE + "  batch_size: {choices: [32, 128]}\n", "searched.yaml")
    refused(call_cli("run", str(searched), cwd=tmp_path), tmp_path, before | {space.name, searched.name},
            "params.batch_size", "(got 128)")
    from study.config import load_config
    from study.preflight import check_budget

    check_budget(load_config(str(space), ["training.batch_size=96"]), n_train=96)  # the whole split is fine


def test_a_warmup_as_long_as_a_whole_trial_is_refused(tmp_path, write_space):
    """The schedule cut such a warmup to the trial's length: the trial was all warmup, while its config
    named a warmup it never ran."""
    before = set(os.listdir(tmp_path))
    space = write_space(SYNTH_SPACE.replace("budget: 3", "budget: 3\n  warmup: true\n  warmup_iters: 9"))
    refused(call_cli("run", str(space), cwd=tmp_path), tmp_path, before | {space.name}, "training.warmup_iters",
            "as long as a whole trial of 9 iterations (3 epochs at batch size 32)", "at most 8", "(got 9)")
    # searched: the longest warmup against the shortest trial, where warmup may be on
    searched = write_space(SYNTH_SPACE + "  batch_size: {choices: [16, 32]}\n  warmup: {choices: [false, true]}\n"
                           "  warmup_iters: {type: int, low: 1, high: 9, when: {warmup: [true]}}\n", "searched.yaml")
    refused(call_cli("run", str(searched), cwd=tmp_path), tmp_path, before | {space.name, searched.name},
            "params.warmup_iters", "a whole trial of 9 iterations")
    from study.config import load_config
    from study.preflight import check_budget

    check_budget(load_config(str(space), ["training.warmup_iters=8"]), n_train=96)
    check_budget(load_config(str(space), ["training.warmup=false"]), n_train=96)  # off: its length is unused


def test_lr_scaling_searched_where_every_batch_is_the_reference_is_refused(tmp_path, write_space):
    """Linear scaling multiplies the lr by batch / reference_batch, 1 at batch 32 and reference 32: the two
    arms trained alike."""
    before = set(os.listdir(tmp_path))
    space = write_space(SYNTH_SPACE.replace("batch_size: 32", "batch_size: 32\n  reference_batch: 32")
                        + "  lr_scaling: {choices: [none, linear]}\n")
    refused(call_cli("run", str(space), cwd=tmp_path), tmp_path, before | {space.name}, "params.lr_scaling",
            "1 for every trial here (both 32)", "search batch_size too")
    from study.config import load_config
    from study.preflight import check_scaling

    check_scaling(load_config(str(space), ["training.reference_batch=64"]))  # linear halves the lr
    check_scaling(load_config(str(write_space(SYNTH_SPACE.replace("batch_size: 32", "reference_batch: 32")
                                              + "  lr_scaling: {choices: [none, linear]}\n"
                                              "  batch_size: {choices: [16, 32]}\n", "batches.yaml"))))


def test_an_epoch_as_long_as_the_longest_trial_is_refused(tmp_path, write_space):
    """Validation and pruning come once per epoch: an epoch_iters past every trial's end validated each
    trial once, at its end, and pruned none."""
    before = set(os.listdir(tmp_path))
    space = write_space(SYNTH_SPACE.replace("budget: 3", "budget: 3\n  epoch_iters: 9"))  # 3 passes of 3 steps
    refused(call_cli("run", str(space), cwd=tmp_path), tmp_path, before | {space.name}, "training.epoch_iters",
            "an epoch of 9 iterations is as long as the longest trial (9 iterations", "at most 8", "(got 9)")
    from study.config import load_config
    from study.preflight import check_budget

    check_budget(load_config(str(space), ["training.epoch_iters=8"]), n_train=96)


def test_a_warmup_of_no_iterations_is_refused(tmp_path, write_space):
    """warmup_iters defaults to 0, and a warmup of 0 iterations is none: `warmup: {choices: [false, true]}`
    alone compared two arms that trained alike, and its verdict compared seed noise."""
    before = set(os.listdir(tmp_path))
    space = write_space(SYNTH_SPACE + "  warmup: {choices: [false, true]}\n")
    refused(call_cli("run", str(space), cwd=tmp_path), tmp_path, before | {space.name}, "training.warmup_iters",
            "a warmup of 0 iterations is none", "(got 0)")
    searched = write_space(SYNTH_SPACE + "  warmup: {choices: [false, true]}\n"
                           "  warmup_iters: {type: int, low: 0, high: 4, when: {warmup: [true]}}\n", "searched.yaml")
    refused(call_cli("run", str(searched), cwd=tmp_path), tmp_path, before | {space.name, searched.name},
            "params.warmup_iters", "a warmup of 0 iterations is none")
    from study.config import load_config
    from study.preflight import check_budget

    check_budget(load_config(str(space), ["training.warmup_iters=2"]), n_train=96)


def test_mixed_precision_off_cuda_is_refused(tmp_path, write_space):
    """Autocast is CUDA's here: on the CPU a bf16 trial trained in fp32 while its config said bf16, and a
    searched precision compared fp32 with fp32."""
    import torch

    before = set(os.listdir(tmp_path))
    space = write_space(SYNTH_SPACE.replace("budget: 3", "budget: 3\n  precision: bf16"))
    refused(call_cli("run", str(space), "--device", "cpu", cwd=tmp_path), tmp_path, before | {space.name},
            "training.precision", "applies on CUDA only", "trains on cpu", "(got 'bf16')")
    searched = write_space(SYNTH_SPACE + "  precision: {choices: [fp32, fp16]}\n", "searched.yaml")
    refused(call_cli("run", str(searched), "--device", "cpu", cwd=tmp_path), tmp_path,
            before | {space.name, searched.name}, "params.precision", "(got 'fp16')")
    from study.config import load_config
    from study.preflight import check_precision

    check_precision(load_config(str(space)), torch.device("cuda"))  # where autocast applies
    check_precision(load_config(str(space), ["training.precision=fp32"]), torch.device("cpu"))


def test_a_refusal_of_what_set_gave_names_set(tmp_path, synth_space):
    """A value given on the command line was named as the file's, which does not hold it, as the
    validator's own refusals already said."""
    before = set(os.listdir(tmp_path))
    said = refused(call_cli("run", str(synth_space), "--device", "cpu", "--set", "training.precision=bf16",
                            cwd=tmp_path), tmp_path, before, "training.precision", "(got 'bf16')")
    assert said.startswith(f"error: {synth_space} (with --set): training.precision: "), said
    said = refused(call_cli("run", str(synth_space), "--set", "training.epoch_iters=9", cwd=tmp_path), tmp_path,
                   before, "training.epoch_iters", "(got 9)")
    assert said.startswith(f"error: {synth_space} (with --set): "), said
    said = refused(call_cli("run", str(synth_space), "--set", "training.lr=0.1", "--set", "training.epoch_iters=9",
                            cwd=tmp_path), tmp_path, before, "training.epoch_iters")
    assert said.startswith(f"error: {synth_space} (with --set): "), said
    epochs = synth_space.with_name("epochs.yaml")  # the same from the file: the file alone is named
    epochs.write_text(synth_space.read_text().replace("budget: 3", "budget: 3\n  epoch_iters: 9"))
    said = refused(call_cli("run", str(epochs), "--set", "training.lr=0.1", cwd=tmp_path), tmp_path,
                   before | {epochs.name}, "training.epoch_iters")
    assert said.startswith(f"error: {epochs}: training.epoch_iters: "), said


@pytest.mark.parametrize("flag", ["--checkpoint-dir", "--report-dir"])
def test_an_output_folder_under_a_file_is_refused_before_the_first_trial(tmp_path, synth_space, flag):
    (tmp_path / "afile").write_text("x")
    before = set(os.listdir(tmp_path))
    refused(call_cli("run", str(synth_space), flag, "afile/sub", cwd=tmp_path), tmp_path, before,
            flag, "afile/sub", "is not a folder")


def test_a_storage_folder_under_a_file_is_refused(tmp_path, synth_space):
    (tmp_path / "afile").write_text("x")
    before = set(os.listdir(tmp_path))
    refused(call_cli("run", str(synth_space), "--storage", "sqlite:///afile/s.db", cwd=tmp_path), tmp_path, before,
            "--storage", "is not a folder")
    refused(call_cli("run", str(synth_space), "--storage", "afile/journal.log", cwd=tmp_path), tmp_path, before,
            "--storage", "is not a folder")


@pytest.mark.parametrize("storage", ["sqlite:///s.db", "s.log"])
def test_a_storage_file_this_process_may_only_read_is_refused_by_run_and_confirm(tmp_path, synth_space, storage):
    """Its folder writable, the file not (another user's, or here immutable): the run failed at its first write
    with the storage-failure line, "rerun the command once it works again", exit 1, and a -wal and -shm left."""
    file = tmp_path / storage.removeprefix("sqlite:///")
    made = run_cli("run", str(synth_space), "--storage", storage, "--trials", "1", "-q", "--no-report", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    if subprocess.run(["chattr", "+i", str(file)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a file immutable here (needs root, as CI has)")
    try:
        before = set(os.listdir(tmp_path))
        for command in (("run", str(synth_space)), ("confirm", "--seeds", "1")):
            refused(call_cli(*command, "--storage", storage, "--no-report", cwd=tmp_path), tmp_path, before,
                    "--storage", f"{file.name} may only be read here (its permissions, or a read-only mount), and a "
                    "run writes to it; `study list` and `study report` read it")
        assert call_cli("list", "--storage", storage, cwd=tmp_path).returncode == 0
    finally:
        subprocess.run(["chattr", "-i", str(file)], check=True)


def test_report_out_under_a_file_is_refused(tmp_path, synth_space):
    assert call_cli("run", str(synth_space), "--trials", "1", "-q", "--no-report", cwd=tmp_path).returncode == 0
    (tmp_path / "afile").write_text("x")
    before = set(os.listdir(tmp_path))
    refused(call_cli("report", "--out", "afile/r", cwd=tmp_path), tmp_path, before, "--out", "is not a folder")


@pytest.fixture
def read_only_folder(tmp_path):
    """A real read-only file system (root ignores permission bits, not a read-only mount)."""
    with tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        yield folder


def test_an_unwritable_output_folder_is_refused_before_the_first_trial(tmp_path, synth_space, read_only_folder):
    before = set(os.listdir(tmp_path))
    refused(call_cli("run", str(synth_space), "--checkpoint-dir", str(read_only_folder / "ck"), cwd=tmp_path),
            tmp_path, before, "--checkpoint-dir", "read-only file system")
    refused(call_cli("run", str(synth_space), "--storage", f"sqlite:///{read_only_folder}/s.db", cwd=tmp_path),
            tmp_path, before, "--storage", "read-only file system")


def test_a_symlinked_report_folder_pointing_outside_is_refused_up_front(tmp_path, synth_space):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "synth").symlink_to(outside)
    before = set(os.listdir(tmp_path))
    refused(call_cli("run", str(synth_space), cwd=tmp_path), tmp_path, before, "--report-dir", "symbolic link")
    assert not list(outside.iterdir())


DROPOUT_MODEL = """
import torch


def net(input_shape, n_classes, width, dropout=0.0):
    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], width), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(width, n_classes))
"""
SEARCHED_OPTIONS = SYNTH_SPACE.replace("name: mlp", "name: dropmodel:net") + (
    "  model.options.dropout: {type: float, low: 0.0, high: 0.5}\n"
    "  data.options.n_features: {choices: [6, 8]}\n")


def test_a_user_model_s_and_dataset_s_own_options_are_searched(tmp_path, write_space, monkeypatch):
    import torch

    from study.config import load_config
    from study.preflight import check_options
    from study.records import TrialRecord
    from study.runner import run_study

    (tmp_path / "dropmodel.py").write_text(DROPOUT_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(str(write_space(SEARCHED_OPTIONS)), ["study.n_trials=3"])
    check_options(cfg)  # dropout is net's argument; n_features is the synthetic dataset's
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", torch.device("cpu"), checkpoint_root=tmp_path / "ck",
                      quiet=True).study
    for t in study.trials:
        config = TrialRecord.of(t).config
        assert config["model_options"] == {"dropout": t.params["model.options.dropout"]}
        assert config["data_options"]["n_features"] == t.params["data.options.n_features"]
        assert config["data_options"]["n_samples"] == 160  # the section's own options stay
    assert len({t.params["model.options.dropout"] for t in study.trials}) == 3


@pytest.mark.parametrize("change, fragments", [
    (("dropout:", "dropuot:"), ["params.model.options.dropuot", "dropmodel:net takes no argument 'dropuot'",
                                "it takes: dropout"]),
    (("name: dropmodel:net", "name: mlp"), ["params.model.options.dropout", "the built-in model 'mlp' takes no"]),
    (("n_features:", "n_feature:"), ["params.data.options.n_feature", "synthetic takes no argument 'n_feature'"]),
])
def test_an_option_its_callable_does_not_take_is_refused_before_the_study(tmp_path, write_space, change, fragments):
    (tmp_path / "dropmodel.py").write_text(DROPOUT_MODEL)
    space = write_space(SEARCHED_OPTIONS.replace(*change))
    before = set(os.listdir(tmp_path))
    refused(call_cli("run", str(space), cwd=tmp_path), tmp_path, before, *fragments)
