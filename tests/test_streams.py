"""Each member's masks, drawn from its own stream, are those its dropout draws alone."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from study.streams import MASKED, Streams, noise_shape


def _state(seed: int) -> torch.Tensor:
    return torch.Generator().manual_seed(seed).get_state()


@pytest.mark.parametrize("cls, shape", [(nn.Dropout, (5, 7)), (nn.Dropout, (5, 2, 3)), (nn.Dropout1d, (5, 3, 6)),
                                        (nn.Dropout2d, (5, 3, 4, 4)), (nn.Dropout3d, (5, 2, 3, 3, 3))],
                         ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_the_masks_of_two_calls_are_what_each_member_s_dropout_draws_alone(cls, shape):
    module = cls(0.3)
    streams = Streams([_state(1), _state(2), _state(3)])
    caller = torch.get_rng_state()
    first, second = streams.dropout_masks([(0.3, noise_shape(module, shape), torch.float32)] * 2)
    assert torch.equal(torch.get_rng_state(), caller)
    for i, seed in enumerate((1, 2, 3)):
        torch.set_rng_state(_state(seed))
        ones = torch.ones(shape)
        assert torch.equal(ones * first[i], module(ones)) and torch.equal(ones * second[i], module(ones)), i
        assert torch.equal(streams.states[i], torch.get_rng_state())


def test_a_channel_dropout_of_an_input_it_takes_otherwise_has_no_noise_shape():
    assert noise_shape(nn.Dropout2d(0.5), (5, 3, 4)) is None  # F.dropout2d's unbatched image
    assert noise_shape(nn.Dropout1d(0.5), (5, 3)) is None
    assert set(MASKED) == {nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d}


def test_each_runs_the_module_on_each_member_s_slice_from_its_own_stream():
    streams = Streams([_state(4), _state(5)])
    h = torch.ones(2 * 3, 8)
    caller = torch.get_rng_state()
    out = streams.each(nn.AlphaDropout(0.4), h, 2)
    assert torch.equal(torch.get_rng_state(), caller)
    for i, seed in enumerate((4, 5)):
        torch.set_rng_state(_state(seed))
        assert torch.equal(out[3 * i:3 * (i + 1)], F.alpha_dropout(torch.ones(3, 8), 0.4, True))
