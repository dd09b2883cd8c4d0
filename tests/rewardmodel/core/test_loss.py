import math

import pytest
import torch
import torch.nn.functional as F

from rewardmodel.core.examples import PreferenceExample, soft_target
from rewardmodel.core.loss import bradley_terry_loss


def loss_and_gradient(margin: float, target: float, weight: float = 1.0) -> tuple[float, float]:
    r_a = torch.tensor([margin], requires_grad=True)
    loss = bradley_terry_loss(r_a, torch.zeros(1), torch.tensor([target]), torch.tensor([weight]))
    loss.backward()
    return loss.item(), r_a.grad.item()


def test_a_hard_target_is_the_usual_bradley_terry_loss():
    margins = torch.tensor([-2.0, 0.0, 0.5, 3.0])

    loss = bradley_terry_loss(margins, torch.zeros(4), torch.ones(4))

    assert loss.item() == pytest.approx(-F.logsigmoid(margins).mean().item())


def test_a_tie_is_smallest_at_a_zero_margin_and_pushes_back_from_either_side():
    assert loss_and_gradient(0.0, 0.5) == (pytest.approx(math.log(2)), pytest.approx(0.0))
    assert loss_and_gradient(1.0, 0.5)[1] > 0  # gradient descent lowers r_a
    assert loss_and_gradient(-1.0, 0.5)[1] < 0  # ...or raises it
    assert loss_and_gradient(1.0, 0.5)[0] > math.log(2)


def test_the_soft_target_of_a_stated_strength_is_sigmoid_of_the_strength():
    assert soft_target("a", 1) == pytest.approx(1 / (1 + math.exp(-1)))  # 0.731
    assert soft_target("a", 2) == pytest.approx(1 / (1 + math.exp(-2)))  # 0.881
    assert soft_target("a", 3) == pytest.approx(1 / (1 + math.exp(-3)))  # 0.953
    assert soft_target("b", 3) == pytest.approx(1 - soft_target("a", 3))
    assert soft_target("tie") == 0.5
    # The loss is smallest where the margin equals the stated strength.
    for strength in (1, 2, 3):
        assert loss_and_gradient(float(strength), soft_target("a", strength))[1] == pytest.approx(0.0, abs=1e-6)


def test_a_strong_preference_pulls_harder_than_a_slight_one():
    slight, clear, strong = (abs(loss_and_gradient(0.0, soft_target("a", s))[1]) for s in (1, 2, 3))

    assert slight < clear < strong
    assert strong / slight == pytest.approx(1.96, abs=0.01)


def test_both_bad_is_no_preference_evidence_and_bad_input_is_refused():
    assert soft_target("both_bad") is None
    with pytest.raises(ValueError, match="strength of 1, 2 or 3"):
        soft_target("a", None)
    with pytest.raises(ValueError, match="unknown outcome"):
        soft_target("left")


def test_a_weight_scales_one_examples_share_of_the_loss():
    margins, targets = torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0])
    per_example = -F.logsigmoid(margins)

    doubled = bradley_terry_loss(margins, torch.zeros(2), targets, torch.tensor([2.0, 1.0]))
    dropped = bradley_terry_loss(margins, torch.zeros(2), targets, torch.tensor([0.0, 1.0]))

    assert doubled.item() == pytest.approx((2 * per_example[0] + per_example[1]).item() / 2)
    assert dropped.item() == pytest.approx(per_example[1].item() / 2)
    assert loss_and_gradient(0.0, 1.0, weight=3.0)[1] == pytest.approx(3 * loss_and_gradient(0.0, 1.0)[1])


def test_an_example_refuses_a_target_or_weight_out_of_range():
    conversation = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="target"):
        PreferenceExample(conversation, "a", "b", target=1.5)
    with pytest.raises(ValueError, match="weight"):
        PreferenceExample(conversation, "a", "b", target=1.0, weight=-1.0)
    with pytest.raises(ValueError, match="conversation"):
        PreferenceExample([], "a", "b", target=1.0)
