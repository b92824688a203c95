"""Diagnostics on the study's own network, rebuilt from what the trials stored."""
import optuna
import pandas as pd
from optuna.trial import TrialState, create_trial

from study import records
from study.report import diagnostics as D
from study.report import tables as T

C = TrialState.COMPLETE


def test_activation_data_shows_small_random_collapsing():
    from study.config import TrialConfig

    rows = []
    for init in ("small_random", "xavier", "he"):
        cfg = TrialConfig(dataset="synthetic", data_options={"n_samples": 120}, depth=6, width=64, init=init,
                          activation="tanh")
        rows.append({"number": len(rows), "status": "complete", **cfg.to_dict()})
    df = D.activation_data(pd.DataFrame(rows))
    assert sorted(set(df["init"])) == ["he", "small_random", "xavier"] and df["layer"].max() == 6
    last = df[df["layer"] == 6].set_index("init")["std"]
    assert last["small_random"] < 1e-4 < 0.1 < last["xavier"]  # the lecture's point, layer by layer


def test_gradient_data_shows_where_deep_layers_stop_learning():
    from study.config import TrialConfig

    rows = []
    for init in ("small_random", "xavier"):
        cfg = TrialConfig(dataset="synthetic", data_options={"n_samples": 200}, depth=6, width=64, init=init,
                          activation="tanh", optimizer="sgd", lr=0.01)
        rows.append({"number": len(rows), "status": "complete", "value": 1.0, **cfg.to_dict()})
    df = D.gradient_data(pd.DataFrame(rows), iterations=5)
    first = df[df["layer"] == 1].set_index("init")["grad_norm"]
    assert df["layer"].max() == 7  # six hidden layers and the output
    assert first["small_random"] < 1e-4 * first["xavier"]  # the signal never reaches back to layer 1


def test_activation_data_rebuilds_the_study_s_own_data_and_model_options(tmp_path, monkeypatch):
    """The study's data options (a user dataset that needs them) and model options are used, not defaults."""
    from study.config import TrialConfig

    (tmp_path / "needsopts.py").write_text(
        "import numpy as np, torch\n"
        "def load(n, d):\n"
        "    rng = np.random.default_rng(0)\n"
        "    return rng.normal(size=(n, d)), np.arange(n) % 2\n"
        "def net(input_shape, n_classes, width, hidden):\n"
        "    assert input_shape == (5,), input_shape\n"
        "    return torch.nn.Sequential(torch.nn.Linear(5, hidden), torch.nn.Tanh(),\n"
        "                               torch.nn.Linear(hidden, n_classes))\n")
    monkeypatch.syspath_prepend(tmp_path)
    cfg = TrialConfig(dataset="needsopts:load", data_options={"n": 80, "d": 5}, model="needsopts:net",
                      model_options={"hidden": 7}, init="xavier", activation="tanh")
    study = optuna.create_study()
    study.add_trial(create_trial(state=C, value=0.5, params={}, distributions={},
                                 user_attrs=records.attrs(config=cfg.to_dict())))  # what a run stores
    df = D.activation_data(T.trials_frame(study))
    assert df[["init", "activation", "layer"]].values.tolist() == [["xavier", "tanh", 1]]
