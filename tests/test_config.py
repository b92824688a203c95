import pytest

from study.config import KNOBS, ConfigError, Param, TrialConfig, load_config, shipped_spaces
from conftest import SYNTH_SPACE


def test_synthetic_space_parses(synth_space):
    cfg = load_config(str(synth_space))
    assert cfg.study.name == "synth" and cfg.study.n_trials == 3 and cfg.study.direction == "minimize"
    assert cfg.defaults.dataset == "synthetic" and cfg.defaults.batch_size == 32
    assert list(cfg.params) == ["optimizer", "lr", "momentum"]
    assert cfg.params["momentum"].when == (("optimizer", ("sgd_momentum",)),)
    assert cfg.scientific == ("optimizer",)


def test_a_conditional_categorical_param_is_not_scientific_by_default(write_space):
    """Arms are values of every scientific param: the trials that do not search it would be named by its
    default."""
    space = write_space(SYNTH_SPACE.replace("momentum: {", "momentum: {choices: [0.5, 0.9], ")
                        .replace("type: float, low: 0.5, high: 0.9, ", ""))
    cfg = load_config(str(space))
    assert cfg.params["momentum"].kind == "categorical" and cfg.params["momentum"].when
    assert cfg.scientific == ("optimizer",)


def test_conditional_params_are_active_only_when_their_condition_holds(synth_space):
    momentum = load_config(str(synth_space)).params["momentum"]
    assert momentum.active({"optimizer": "sgd_momentum"})
    assert not momentum.active({"optimizer": "adam"})


@pytest.mark.parametrize("name", sorted(shipped_spaces()))
def test_every_shipped_space_is_valid(name):
    cfg = load_config(name)
    assert cfg.study.question, "each shipped space names the question it answers"
    assert shipped_spaces()[name].read_text().startswith("# Question:")


def test_the_readme_example_is_a_valid_space(tmp_path):
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    cfg = load_config(str(path))
    assert cfg.study.name == "my-study" and cfg.defaults.depth == 3
    assert list(cfg.params) == ["optimizer", "lr", "momentum", "batch_size", "width"]


def test_overrides_are_applied_and_parsed_as_yaml(synth_space):
    cfg = load_config(str(synth_space), ["study.n_trials=7", "params.lr.high=0.5", "data.shuffle=false"])
    assert cfg.study.n_trials == 7 and cfg.params["lr"].high == 0.5 and cfg.defaults.shuffle is False


def test_setting_a_searched_value_fixes_it():
    # It used to be ignored (the param won) while still counting as another experiment.
    cfg = load_config("quick", ["training.lr=3e-4"])
    assert "lr" not in cfg.params and cfg.defaults.lr == 3e-4
    assert cfg.resolve({}).lr == 3e-4


@pytest.mark.parametrize("fixed, searched", [("adam", ["lr"]), ("sgd_momentum", ["lr", "momentum"])])
def test_a_condition_on_a_fixed_param_is_resolved_statically(fixed, searched):
    # quick's momentum is searched when optimizer is sgd_momentum: fixing the optimizer decides it.
    for how in (f"params.optimizer={fixed}", f"training.optimizer={fixed}"):
        cfg = load_config("quick", [how])
        assert list(cfg.params) == searched and cfg.defaults.optimizer == fixed, how
        assert all(p.when == () for p in cfg.params.values())


def test_a_condition_on_a_param_searched_below_it_is_refused(write_space):
    path = write_space("params:\n  momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: [sgd_momentum]}}\n"
                       "  optimizer: {choices: [sgd_momentum, adam]}\n")
    with pytest.raises(ConfigError, match="optimizer is searched below this param"):
        load_config(str(path))


def test_resolve_applies_one_trials_values(synth_space):
    cfg = load_config(str(synth_space))
    t = cfg.resolve({"lr": 0.01, "optimizer": "adam"})
    assert isinstance(t, TrialConfig) and t.lr == 0.01 and t.optimizer == "adam" and t.batch_size == 32


def test_grid_space_lists_every_value(write_space):
    path = write_space(_merge(SYNTH_SPACE, "study:\n  sampler: grid\nparams:\n  lr: {choices: [0.01, 0.1]}\n"
                              "  momentum: {type: float, low: 0.5, high: 0.9, step: 0.2, "
                              "when: {optimizer: [sgd_momentum]}}\n"))
    cfg = load_config(str(path))
    assert cfg.grid_space() == {"optimizer": ["sgd_momentum", "adam"], "lr": [0.01, 0.1],
                                "momentum": pytest.approx([0.5, 0.7, 0.9])}


def test_a_grid_search_without_a_target_runs_each_of_its_points_once(write_space):
    path = write_space(_merge(SYNTH_SPACE, "study:\n  sampler: grid\nparams:\n  lr: {choices: [0.01, 0.1, 0.3]}\n"
                              "  momentum: {choices: [0.9], when: {optimizer: [sgd_momentum]}}\n")
                       .replace("  n_trials: 3\n", ""))
    assert load_config(str(path)).study.n_trials == 6  # 2 optimizers x 3 lrs, not the default 20
    assert load_config(str(path), [("study.n_trials", 4)]).study.n_trials == 4


def test_every_knob_has_a_section_and_an_inspectable_constraint():
    for name, f in KNOBS.items():
        assert f.metadata["section"] in ("data", "model", "training"), name
        constraint = f.metadata["check"]
        assert callable(constraint) and str(constraint) and constraint.invalid(), name
        assert constraint(getattr(TrialConfig(), name)) == getattr(TrialConfig(), name)  # the default is valid


# Generated from the constraints: every knob, every value its constraint says is invalid, as a fixed
# value (section key) and as a searched choice (params). No hand-written list to fall behind.
GENERATED = [(f.metadata["section"], f.metadata["yaml"] or name, name, bad)
             for name, f in KNOBS.items() for bad in f.metadata["check"].invalid()]


@pytest.mark.parametrize("section,key,name,bad", GENERATED,
                         ids=[f"{s}.{k}={b!r}" for s, k, _, b in GENERATED])
def test_every_invalid_value_of_every_knob_is_refused_naming_the_key(synth_space, section, key, name, bad):
    with pytest.raises(ConfigError) as info:
        load_config(str(synth_space), [(f"{section}.{key}", bad)])
    assert info.value.key == f"{section}.{key}" and info.value.source.endswith("(with --set)")
    assert info.value.problem.startswith(("must", "cannot import")), info.value.problem
    if name not in ("data_options", "model_options"):  # options are mappings, never searched
        with pytest.raises(ConfigError) as info:
            load_config(str(synth_space), [(f"params.{name}", {"choices": [bad]})])
        assert info.value.key == f"params.{name}.choices[0]"


# (a change to the synthetic space, the key the message must name, a fragment of the problem)
BAD = [
    ("study:\n  nam: x\n", "study.nam", "unknown key (did you mean 'name'?)"),
    ("bogus: 1\n", "bogus", "unknown key"),
    ("training:\n  lr: fast\n", "training.lr", "must be a number"),
    ("training:\n  batch_size: 0\n", "training.batch_size", "integer >= 1"),
    ("training:\n  batch_size: 12.5\n", "training.batch_size", "integer >= 1"),
    ("training:\n  budget: -3\n", "training.budget", "integer >= 1"),
    ("training:\n  epoch_iters: -1\n", "training.epoch_iters", "integer >= 0"),
    ("training:\n  optimizer: adamax\n", "training.optimizer", "must be one of sgd, sgd_momentum"),
    ("model:\n  init: zeros\n", "model.init", "must be one of small_random"),
    ("model:\n  name: transformer\n", "model.name", "package.module:callable"),
    ("model:\n  name: nosuchpkg.models:net\n", "model.name", "cannot import module 'nosuchpkg.models'"),
    ("data:\n  name: digits2\n", "data.name", "must be one of digits"),
    ("data:\n  shuffle: maybe\n", "data.shuffle", "true or false"),
    ("data:\n  val_fraction: 0.6\n  test_fraction: 0.5\n", "data.val_fraction", "must be < 1"),
    ("params:\n  lr: {type: float, low: 0.1, high: 0.01}\n", "params.lr.low", "low must be <= high"),
    ("params:\n  lr: {type: float, low: 0, high: 0.01, log: true}\n", "params.lr.low", "must be a number > 0"),
    ("params:\n  optimizer: {choices: []}\n", "params.optimizer.choices", "non-empty list"),
    ("params:\n  optimizer: {choices: [sgd, lbfgs]}\n", "params.optimizer.choices[1]", "must be one of"),
    ("params:\n  batch_size: {choices: [32, 0]}\n", "params.batch_size.choices[1]", "integer >= 1"),
    ("params:\n  batch_size: {type: float, low: 1, high: 8}\n", "params.batch_size.type", "integer setting"),
    ("params:\n  lr: {type: float, low: 0.1}\n", "params.lr.high", "needs low and high"),
    ("params:\n  learning_rate: 0.1\n", "params.learning_rate", "unknown key"),
    ("params:\n  momentum: {type: float, low: 0.1, high: 0.5, when: {opt: [sgd]}}\n", "params.momentum.when.opt",
     "unknown key"),
    ("study:\n  sampler: {name: bayes}\n", "study.sampler.name", "must be one of tpe, random, grid, cmaes, qmc"),
    ("study:\n  pruner: {name: median, options: {patience: 3}}\n", "study.pruner.options", "patience"),
    ("study:\n  n_trials: 0\n", "study.n_trials", "integer >= 1"),
    ("study:\n  metric: val_auc\n", "study.metric", "must be one of val_loss"),
    ("study:\n  scientific: [width]\n", "study.scientific[0]", "must be a searched param"),
    ("study:\n  scientific: [lr]\n", "study.scientific[0]", "is continuous, so each trial would be an arm"),
    ("study:\n  scientific: [optimizer, momentum]\nparams:\n  optimizer: {choices: [adam, sgd_momentum]}\n"
     "  momentum: {choices: [0.5, 0.9], when: {optimizer: [sgd_momentum]}}\n", "study.scientific[1]",
     "is searched only when optimizer: [sgd_momentum], and each arm is a value of every scientific param"),
    ("study:\n  sampler: grid\n", "params.lr", "grid search needs"),
    # non-finite numbers, wherever a number is read
    ("training:\n  lr: .inf\n", "training.lr", "must be a finite number"),
    ("training:\n  lr: inf\n", "training.lr", "must be a finite number"),
    ("training:\n  weight_decay: .inf\n", "training.weight_decay", "must be a finite number"),
    ("training:\n  divergence_factor: .nan\n", "training.divergence_factor", "must be a finite number"),
    ("params:\n  lr: {type: float, low: 1.0e-3, high: .inf}\n", "params.lr.high", "must be a finite number"),
    ("study:\n  pruner: {name: median, options: {n_warmup_steps: .nan}}\n", "study.pruner.options.n_warmup_steps",
     "must be a finite number"),
    ("study:\n  timeout: .inf\n", "study.timeout", "must be a finite number"),
    # seeds outside [0, 2**32)
    ("training:\n  seed: 4294967296\n", "training.seed", "in [0, 4294967295]"),
    ("data:\n  split_seed: -1\n", "data.split_seed", "in [0, 4294967295]"),
    ("study:\n  sampler: {name: random, seed: 18446744073709551616}\n", "study.sampler.seed", "in [0, 4294967295]"),
    ("params:\n  seed: {choices: [1, 4294967296]}\n", "params.seed.choices[1]", "in [0, 4294967295]"),
    # ranges a grid would enumerate
    ("study:\n  sampler: grid\nparams:\n  lr: {choices: [0.1]}\n"
     "  momentum: {choices: [0.9], when: {optimizer: [sgd_momentum]}}\n"
     "  width: {type: int, low: 1, high: 1000000000}\n", "params.width", "more than 100000 points"),
    ("study:\n  sampler: grid\nparams:\n  lr: {type: float, low: 0.1, high: 1.0, step: 1.0e-12}\n"
     "  momentum: {choices: [0.9], when: {optimizer: [sgd_momentum]}}\n", "params.lr", "more than 100000 points"),
    # a target past the grid's points, which the grid sampler would run again
    ("study:\n  sampler: grid\n  n_trials: 5\nparams:\n  lr: {choices: [0.01, 0.1]}\n"
     "  momentum: {choices: [0.9], when: {optimizer: [sgd_momentum]}}\n", "study.n_trials",
     "the grid holds 4 points, each run once: ask for 4 trials or fewer"),
    # study names
    ("study:\n  name: \"a\\x1b[31mb\"\n", "study.name", "control characters"),
    ("study:\n  name: \"a\\0b\"\n", "study.name", "control characters"),
    ("study:\n  name: \"a\\u2028b\"\n", "study.name", "line separators"),
    (f"study:\n  name: {'n' * 201}\n", "study.name", "at most 200 characters"),
    ("study:\n  name: 7\n", "study.name", "non-empty string"),
    ("study:\n  max_iters: 0\n", "study.max_iters", "integer >= 1"),
    ("study:\n  threads: 0\n", "study.threads", "integer >= 1"),
    ("study:\n  threads: two\n", "study.threads", "integer >= 1"),
    # hyperparameters searched where nothing uses them
    ("params:\n  momentum: {type: float, low: 0.5, high: 0.9}\n", "params.momentum",
     "searched, but optimizer adam does not use momentum; make it conditional: when: {optimizer: [sgd_momentum]}"),
    ("params:\n  momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: [adam]}}\n", "params.momentum",
     "optimizer adam does not use momentum; no optimizer it can apply to uses it"),
    ("params:\n  gamma: {type: float, low: 0.1, high: 0.5}\n", "params.gamma",
     "searched, but schedule constant does not use gamma"),
    ("params:\n  schedule: {choices: [cosine, step]}\n  step_fraction: {type: float, low: 0.1, high: 0.5}\n",
     "params.step_fraction",
     "schedule cosine does not use step_fraction; make it conditional: when: {schedule: [step]}"),
    ("params:\n  warmup: {choices: [false, true]}\n  warmup_iters: {type: int, low: 1, high: 4}\n",
     "params.warmup_iters", "searched, but warmup false does not use warmup_iters; make it conditional: when: "
     "{warmup: [true]}"),
    ("params:\n  kernel_size: {choices: [3, 5]}\n", "params.kernel_size",
     "searched, but model mlp does not use kernel_size; no model it can apply to uses it"),
    ("params:\n  model: {choices: [mlp, cnn]}\n  kernel_size: {choices: [3, 5]}\n", "params.kernel_size",
     "model mlp does not use kernel_size; make it conditional: when: {model: [cnn]}"),
    ("params:\n  reference_batch: {choices: [16, 32]}\n", "params.reference_batch",
     "searched, but lr_scaling none does not use reference_batch; no lr_scaling it can apply to uses it"),
    ("study:\n  checkpoints: {keep_best: -1}\n", "study.checkpoints.keep_best", "integer >= 0"),
    # a model's or dataset's own options
    ("params:\n  model.options.p: {low: 0, high: 1}\n", "params.model.options.p.type", "needs choices, or type"),
    ("params:\n  data.options.n: {type: int, low: 9, high: 2}\n", "params.data.options.n.low", "low must be <="),
    ("params:\n  model.options.p: {type: float, low: 0, high: 1, log: true}\n", "params.model.options.p.log",
     "true needs low > 0"),
    ("params:\n  model.options: {choices: [1]}\n", "params.model.options", "unknown key"),
]


def _merge(base: str, change: str) -> str:
    """Put `change`'s keys into the synthetic space (top-level sections replaced key by key)."""
    import yaml

    raw = yaml.safe_load(base)
    for section, value in yaml.safe_load(change).items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section].update(value)
        else:
            raw[section] = value
    return yaml.safe_dump(raw, sort_keys=False)


@pytest.mark.parametrize("change,key,fragment", [pytest.param(*row, id=row[1]) for row in BAD])
def test_bad_input_names_file_key_and_value(write_space, change, key, fragment):
    path = write_space(_merge(SYNTH_SPACE, change))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert info.value.key == key, message
    assert fragment in message
    assert message.startswith(str(path))
    assert "got" in message


def test_yaml_syntax_error_names_the_line(write_space):
    path = write_space("study:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+.*YAML syntax error"):
        load_config(str(path))


def test_a_model_knob_searched_for_a_user_model_that_does_not_take_it_is_refused(write_space, tmp_path,
                                                                                   monkeypatch):
    """A user model gets the knobs its signature takes: a searched width it does not take changed nothing."""
    (tmp_path / "mynet.py").write_text("from torch import nn\n\n\ndef net(input_shape, n_classes, depth):\n"
                                       "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes))\n")
    monkeypatch.syspath_prepend(tmp_path)
    path = write_space(_merge(SYNTH_SPACE, "model:\n  name: mynet:net\nparams:\n  width: {choices: [8, 16]}\n"))
    with pytest.raises(ConfigError, match="params.width: searched, but model mynet:net does not use width"):
        load_config(str(path))
    assert load_config(str(write_space(_merge(SYNTH_SPACE, "model:\n  name: mynet:net\nparams:\n"
                                                            "  depth: {choices: [1, 2]}\n"), "ok.yaml"))).params


def test_loading_a_space_runs_no_user_code(write_space, tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text("def load(n):\n    raise RuntimeError('disk on fire')\n")
    monkeypatch.syspath_prepend(tmp_path)
    path = write_space(_merge(SYNTH_SPACE, "data:\n  name: mydata:load\n  options: {n: 3}\n"))
    assert load_config(str(path)).defaults.dataset == "mydata:load"  # preflight calls it, before a run


def test_any_unicode_study_name_is_accepted(write_space):
    for name in ("名前", "😀 study", "a b/c..", "ünïcödé-\u200d-joined", "x" * 200):
        assert load_config(str(write_space(SYNTH_SPACE)), [("study.name", name)]).study.name == name


def test_a_huge_searched_range_is_never_enumerated_without_a_grid(write_space):
    import time

    start = time.perf_counter()
    cfg = load_config(str(write_space(_merge(SYNTH_SPACE, "params:\n  width: {type: int, low: 1, high: 1000000000}\n"
                                                       "  weight_decay: {type: float, low: 0.0, high: 1.0, "
                                                       "step: 1.0e-12}\n"))))
    assert cfg.grid_space() == {} and cfg.params["width"].grid_size() == 10**9
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("item,key", [("training.lr", "training.lr"), ("=3", "=3"), ("a..b=1", "a..b=1"),
                                      ("study.name.x=1", "study.name")])
def test_bad_set_is_refused(synth_space, item, key):
    with pytest.raises(ConfigError) as info:
        load_config(str(synth_space), [item])
    assert info.value.key == key


def test_a_bad_set_value_is_blamed_on_the_flag(synth_space):
    with pytest.raises(ConfigError, match=r"\(with --set\): training.lr: must be a number") as info:
        load_config(str(synth_space), ["training.lr=fast"])
    assert info.value.value == "fast"


def test_unknown_space_suggests_a_shipped_one():
    with pytest.raises(ConfigError, match="did you mean 'quick'"):
        load_config("quik")


def test_param_grid_for_float_needs_a_step():
    assert Param("lr", "float", low=0.1, high=0.3).grid_size() is None
    assert Param("lr", "float", low=0.1, high=0.3, step=0.1).grid() == pytest.approx([0.1, 0.2, 0.3])
