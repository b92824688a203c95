import pickle

import pytest
import torch

from study.checkpoints import Checkpoints

ME = {"study": "a" * 32, "trial": 0, "config": {"lr": 0.1}}


def test_rotation_keeps_the_newest(tmp_path):
    ck = Checkpoints(tmp_path / "trial-0", keep=2, identity=ME)
    for epoch in range(5):
        ck.save(epoch, {"epoch": epoch, "w": torch.full((2,), float(epoch))})
    assert ck.epochs() == [3, 4]
    assert ck.latest()["epoch"] == 4
    assert not list((tmp_path / "trial-0").glob("*.tmp"))


def test_no_checkpoint_is_none(tmp_path):
    assert Checkpoints(tmp_path / "nothing").latest() is None


def test_loading_refuses_arbitrary_objects_and_says_why(tmp_path):
    ck = Checkpoints(tmp_path, keep=1, identity=ME)
    torch.save({"evil": object(), "identity": ME}, ck.path(0))  # what weights_only=True must refuse to unpickle
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(ck.path(0), weights_only=True)
    assert ck.latest() is None
    assert "UnpicklingError" in ck.warnings[0]


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_a_torch_file"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_epoch(tmp_path, damage):
    ck = Checkpoints(tmp_path, keep=3, identity=ME)
    for epoch in range(3):
        ck.save(epoch, {"epoch": epoch, "w": torch.randn(1000)})
    newest = ck.path(2)
    data = newest.read_bytes()
    newest.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "not_a_torch_file": b"hello"}[damage])
    assert ck.latest()["epoch"] == 1
    assert len(ck.warnings) == 1 and "epoch-0002.pt could not be read" in ck.warnings[0]


def test_every_checkpoint_damaged_means_a_fresh_start(tmp_path):
    ck = Checkpoints(tmp_path, keep=2, identity=ME)
    for epoch in range(2):
        ck.save(epoch, {"epoch": epoch})
        ck.path(epoch).write_bytes(b"")
    assert ck.latest() is None and len(ck.warnings) == 2


@pytest.mark.parametrize("other", [
    pytest.param({**ME, "study": "b" * 32}, id="another_study"),
    pytest.param({**ME, "trial": 1}, id="another_trial"),
    pytest.param({**ME, "config": {"lr": 0.2}}, id="another_config"),
])
def test_a_checkpoint_of_another_study_trial_or_config_is_never_resumed(tmp_path, other):
    Checkpoints(tmp_path, identity=other).save(0, {"epoch": 0})
    ck = Checkpoints(tmp_path, identity=ME)
    assert ck.latest() is None and "belongs to another" in ck.warnings[0]


def test_clear_removes_epoch_files_and_temporaries_only(tmp_path):
    ck = Checkpoints(tmp_path / "trial-0", identity=ME)
    ck.save(0, {"epoch": 0})
    (ck.folder / ".epoch-0001.pt.123.tmp").write_bytes(b"x")
    (ck.folder / "final.pt").write_bytes(b"kept")
    ck.clear()
    assert [p.name for p in ck.folder.iterdir()] == ["final.pt"]
    (ck.folder / "final.pt").unlink()
    ck.clear()
    assert not ck.folder.exists()
