import torch

from study.checkpoints import Checkpoints


def test_rotation_keeps_the_newest(tmp_path):
    ck = Checkpoints(tmp_path / "trial-0", keep=2)
    for epoch in range(5):
        ck.save(epoch, {"epoch": epoch, "w": torch.full((2,), float(epoch))})
    assert ck.epochs() == [3, 4]
    assert ck.latest()["epoch"] == 4
    assert not list((tmp_path / "trial-0").glob("*.tmp"))


def test_no_checkpoint_is_none(tmp_path):
    assert Checkpoints(tmp_path / "nothing").latest() is None


def test_loading_refuses_arbitrary_objects(tmp_path):
    import pickle

    import pytest

    ck = Checkpoints(tmp_path, keep=1)
    torch.save({"evil": object()}, ck.path(0))  # what weights_only=True must refuse to unpickle
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        ck.latest()
