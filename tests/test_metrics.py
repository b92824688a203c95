import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from study.metrics import _lanes, classification_metrics, evaluate, metrics_of, nll


def test_classification_metrics_are_macro_averaged():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred)
    assert m["val_accuracy"] == pytest.approx(4 / 6)
    assert m["val_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["val_precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert m["val_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_evaluate_gives_the_mean_nll_and_restores_training_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Dropout(0.5))
    x, y = torch.randn(50, 5), torch.randint(0, 3, (50,))
    m = evaluate(model, x, y)
    model.eval()
    expected = F.nll_loss(F.log_softmax(model(x), dim=1), y).item()
    assert m["val_loss"] == pytest.approx(expected, rel=1e-5)
    model.train()
    evaluate(model, x, y)
    assert model.training


@settings(max_examples=300, deadline=None)
@given(labels=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6)), min_size=1, max_size=60))
def test_classification_metrics_are_scikit_learns(labels):
    """The device implementation against scikit-learn itself, on any labels and predictions: classes
    missing from either side, predictions of classes that never occur, one sample."""
    y_true, y_pred = (np.array(side) for side in zip(*labels, strict=True))
    m = classification_metrics(y_true, y_pred)
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert [m["val_accuracy"], m["val_precision"], m["val_recall"], m["val_f1"]] == pytest.approx(
        [accuracy_score(y_true, y_pred), precision, recall, f1], abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_population_s_members_are_scored_at_once_as_each_alone(data):
    """metrics_of scores K models' predictions in one pass (a population's validation): each row as that
    model alone, and as scikit-learn."""
    n, k = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 5))
    y = torch.tensor(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
    preds = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, 5), min_size=n, max_size=n), min_size=k,
                                            max_size=k)))
    losses = torch.rand(k)
    together = metrics_of(losses, y, preds, 6)
    for j in range(k):
        assert together[j] == pytest.approx(metrics_of(losses[j:j + 1], y, preds[j:j + 1], 6)[0], abs=1e-12)
        assert together[j]["val_f1"] == pytest.approx(f1_score(y, preds[j], average="macro", zero_division=0),
                                                      abs=1e-12)
        assert together[j]["val_loss"] == pytest.approx(losses[j].item())


@pytest.mark.parametrize("n_classes", [2, 3, 7, 10, 15, 16, 40])  # below and above a SIMD register's floats
def test_nll_is_cross_entropy_per_row_to_the_bit_with_its_gradient(n_classes):
    """The population's losses: faster on a CPU for few classes (the transposed log_softmax), the same
    values and gradients as F.cross_entropy, so that a member's loss is the one it has alone."""
    torch.manual_seed(n_classes)
    x = (3 * torch.randn(4096, n_classes)).requires_grad_()
    y, weights = torch.randint(0, n_classes, (4096,)), torch.rand(4096)
    want = F.cross_entropy(x, y, reduction="none")
    got = nll(x, y)
    assert torch.equal(got, want)
    assert torch.equal(*(torch.autograd.grad((v * weights).sum(), x)[0] for v in (got, want)))
    assert _lanes() in (0, 8, 16)
