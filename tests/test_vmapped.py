"""The vmap path's dropout: each member's masks from its own stream, as its sequential run draws them."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import stack_module_state

from study.streams import Streams
from study.vmapped import forward_of

K, B = 3, 5


class Net(nn.Module):
    """pytorch/examples' MNIST network, smaller: modules called from a forward of its own (its first
    dropout a channel one, Dropout2d, as in that example's earlier versions, with `channel`)."""

    def __init__(self, p1: float = 0.25, p2: float = 0.5, channel: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.dropout1, self.dropout2 = (nn.Dropout2d if channel else nn.Dropout)(p1), nn.Dropout(p2, inplace=True)
        self.fc1, self.fc2 = nn.Linear(4 * 3 * 3, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = self.dropout1(F.max_pool2d(F.relu(self.conv1(x)), 2))
        x = F.relu(self.dropout2(self.fc1(torch.flatten(x, 1))))  # inplace, on a Linear's output
        if type(self.dropout1) is nn.Dropout:
            x = self.dropout1(x.tanh())  # a module called twice: two draws, in order
        return self.fc2(x)


class Sequence(nn.Module):
    """Dropout on a [length, batch, features] tensor: its input does not lead with the batch."""

    def __init__(self):
        super().__init__()
        self.drop, self.fc = nn.Dropout(0.3), nn.Linear(4, 3)

    def forward(self, x):  # x [B, L, 4]
        return self.fc(self.drop(x.transpose(0, 1)).transpose(0, 1)).mean(dim=1)


def _states(seeds) -> list[torch.Tensor]:
    return [torch.Generator().manual_seed(s).get_state() for s in seeds]


@pytest.mark.parametrize("p1, p2, channel", [(0.25, 0.5, False), (0.0, 1.0, False), (0.25, 0.5, True)],
                         ids=["dropout", "p 0 and p 1: no draw", "channel dropout"])
def test_each_member_s_masks_come_from_its_own_stream_as_alone(p1, p2, channel):
    torch.manual_seed(0)
    models = [Net(p1, p2, channel) for _ in range(K)]
    x = torch.randn(K, B, 1, 8, 8)
    streams = Streams(_states(range(10, 10 + K)))
    params, buffers = stack_module_state(models)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    caller = torch.get_rng_state()
    logits = forward_of(models[0], streams)(leaves, buffers, x)
    assert torch.equal(torch.get_rng_state(), caller) and "forward" not in vars(models[0].dropout1)
    logits.square().sum().backward()
    for i, (model, state) in enumerate(zip(models, _states(range(10, 10 + K)), strict=True)):
        torch.set_rng_state(state)
        alone = model(x[i])
        alone.square().sum().backward()
        assert torch.equal(streams.states[i], torch.get_rng_state()), i  # as many draws, in the same order
        torch.testing.assert_close(logits[i], alone, rtol=1e-5, atol=1e-6)
        for name, param in model.named_parameters():
            torch.testing.assert_close(leaves[name].grad[i], param.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_evaluation_draws_nothing():
    models = [Net() for _ in range(K)]
    params, buffers = stack_module_state(models)
    streams = Streams(_states(range(K)))
    before = list(streams.states)
    models[0].eval()
    x = torch.randn(K, B, 1, 8, 8)
    logits = forward_of(models[0], streams)(params, buffers, x)
    assert all(torch.equal(a, b) for a, b in zip(before, streams.states, strict=True))
    torch.testing.assert_close(logits[1], models[1].eval()(x[1]), rtol=1e-5, atol=1e-6)


def test_a_dropout_whose_input_does_not_lead_with_the_batch_is_refused():
    models = [Sequence() for _ in range(K)]
    params, buffers = stack_module_state(models)
    with pytest.raises(ValueError, match="lead with the batch"):
        forward_of(models[0], Streams(_states(range(K))))(params, buffers, torch.randn(K, B, 6, 4))
    assert "forward" not in vars(models[0].drop)  # the template is a member's own model: given back


class Unbatched(nn.Module):
    """A Dropout2d of a 3-d input, which F.dropout2d takes as one unbatched image (with a warning)."""

    def __init__(self):
        super().__init__()
        self.drop, self.fc = nn.Dropout2d(0.3), nn.Linear(4, 3)

    def forward(self, x):  # x [B, L, 4]
        return self.fc(self.drop(x)).mean(dim=1)


def test_a_channel_dropout_of_an_input_it_does_not_take_batched_is_refused():
    models = [Unbatched() for _ in range(K)]
    params, buffers = stack_module_state(models)
    with pytest.raises(ValueError, match="channel dropout"):
        forward_of(models[0], Streams(_states(range(K))))(params, buffers, torch.randn(K, B, 6, 4))


def test_without_streams_dropout_is_left_to_vmap_which_refuses_it():
    models = [Net() for _ in range(K)]
    params, buffers = stack_module_state(models)
    with pytest.raises(RuntimeError, match="randomness"):
        forward_of(models[0])(params, buffers, torch.randn(K, B, 1, 8, 8))
