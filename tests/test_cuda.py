"""GPU-only checks (skipped without CUDA): bf16 autocast, data resident on the device, no host copies
in the step loop."""
import pytest
import torch

from study.config import TrialConfig
from study.trial import device_data, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TINY = dict(dataset="synthetic", data_options={"n_samples": 160, "n_features": 8, "n_classes": 3}, depth=1,
            width=16, optimizer="adam", lr=0.01)


def test_bf16_trial_on_cuda_with_data_resident():
    cfg = TrialConfig(**TINY, batch_size=32, budget=3, precision="bf16")
    device = torch.device("cuda")
    result = train(cfg, device)
    data = device_data(cfg, device)
    assert data.x_train.is_cuda and data.y_train.is_cuda and data.x_val.is_cuda
    assert next(result.model.parameters()).is_cuda
    assert result.final["val_accuracy"] > 0.5


def _memcpys(cfg: TrialConfig) -> int:
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cuda")
    train(cfg, device)  # warm: data upload and kernels outside the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        train(cfg, device)
        torch.cuda.synchronize()
    copies = [e for e in prof.key_averages() if "memcpy" in e.key.lower() or e.key == "aten::_local_scalar_dense"]
    return sum(e.count for e in copies)


def test_no_host_copies_in_the_step_loop():
    # One pass and one epoch each; the second takes 4x the steps. Copies per epoch are allowed,
    # copies per step are not: the counts must be equal.
    few = TrialConfig(**TINY, batch_size=32, budget_unit="iterations", budget=3, precision="bf16")
    many = TrialConfig(**TINY, batch_size=8, budget_unit="iterations", budget=12, precision="bf16")
    assert _memcpys(few) == _memcpys(many)


def test_cli_run_on_cuda(tmp_path, synth_space):
    from study.cli import main

    assert main(["run", str(synth_space), "--device", "cuda", "--set", "training.precision=bf16", "-q",
                 "--storage", f"sqlite:///{tmp_path / 'g.db'}", "--checkpoint-dir", str(tmp_path)]) == 0
