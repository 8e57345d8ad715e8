import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ppvit.losses import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from tests.reference.nb000_loss import LabelSmoothingCrossEntropy as NotebookLSCE


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_notebook(smoothing):
    pred = paddle.randn([8, 10]) * 3
    target = paddle.to_tensor(np.random.randint(0, 10, size=8), dtype="int64")
    want = float(NotebookLSCE(smoothing)(pred, target))
    assert float(LabelSmoothingCrossEntropy(smoothing)(pred, target)) == pytest.approx(want, abs=1e-6)
    # [B, 1] labels as paddle's datasets yield them
    assert float(LabelSmoothingCrossEntropy(smoothing)(pred, target.unsqueeze(1))) == pytest.approx(want, abs=1e-6)
    # one-hot soft targets give the same loss
    soft = F.one_hot(target, 10)
    assert float(LabelSmoothingCrossEntropy(smoothing)(pred, soft)) == pytest.approx(want, abs=1e-6)


def test_soft_targets_are_a_mixture_of_hard_losses():
    # for a MixUp target lam*y_a + (1-lam)*y_b the loss is linear in the target
    pred = paddle.randn([6, 10])
    a = paddle.to_tensor(np.random.randint(0, 10, 6), dtype="int64")
    b = paddle.to_tensor(np.random.randint(0, 10, 6), dtype="int64")
    lam = 0.3
    soft = lam * F.one_hot(a, 10) + (1 - lam) * F.one_hot(b, 10)
    loss = LabelSmoothingCrossEntropy(0.1)
    want = lam * float(loss(pred, a)) + (1 - lam) * float(loss(pred, b))
    assert float(loss(pred, soft)) == pytest.approx(want, abs=1e-6)


def test_no_smoothing_equals_cross_entropy():
    pred = paddle.randn([5, 7])
    target = paddle.to_tensor(np.random.randint(0, 7, 5), dtype="int64")
    want = float(F.cross_entropy(pred, target))
    assert float(SoftTargetCrossEntropy()(pred, target)) == pytest.approx(want, abs=1e-6)


def test_backward_through_soft_targets():
    pred = paddle.randn([4, 10])
    pred.stop_gradient = False
    soft = F.softmax(paddle.randn([4, 10]))
    LabelSmoothingCrossEntropy()(pred, soft).backward()
    assert pred.grad is not None and np.isfinite(pred.grad.numpy()).all()
    assert np.abs(pred.grad.numpy()).sum() > 0
