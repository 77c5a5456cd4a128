"""The gradient-equivalence check: fingerprints of dL/dyhat at the fixed initial predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alz_core.config import RejectionConfig
from alz_core.data.synthetic import synthetic_labels
from alz_core.graph.loss_graph import parse_formula
from alz_core.rejection.dense import DenseRejectionProblem
from alz_core.rejection.equivalence import branch_fingerprint, combine_fingerprints, quantize


@pytest.fixture(scope="module")
def problem() -> DenseRejectionProblem:
    labels = torch.from_numpy(synthetic_labels(0, 2, size=16, num_classes=4)).long()
    return DenseRejectionProblem(labels, 4, "miou")


def fp(problem: DenseRejectionProblem, text: str) -> str | None:
    return problem.fingerprint(parse_formula(text))


# Rewrites of cross-entropy whose gradient w.r.t. yhat is -y/(yhat + eps) up to rounding far
# below 6 significant digits, given the protected operators.
CE_CLASS = [
    "-(y*log(yhat))",
    "log(yhat)*(-y)",
    "-log(yhat)*y",
    "y*(-log(yhat))",
    "-y*log(yhat) + 1",  # an additive constant
    "-y*log(yhat) - y",  # an additive target-only term
    "y*log(inv(yhat))",  # log(1/(yhat + eps) + eps) differs by ~eps/yhat: invisible
    "y*log(1/yhat)",
    "-y*log(abs(yhat))",  # yhat > 0
    "-y*log(sqrt(yhat))*2",
    "-y*log(yhat^2)*0.5",
    "-y*0.5*log(yhat^2)",
    "-y*log(exp(log(yhat)))",
    "-y*(log(yhat) + log(yhat))*0.5",
]


@pytest.mark.parametrize("text", CE_CLASS)
def test_equal_gradient_rewrites_share_the_fingerprint(problem, text: str) -> None:
    reference = fp(problem, "-y*log(yhat)")
    assert reference is not None
    assert fp(problem, text) == reference


@pytest.mark.parametrize("text", [
    "-y*log(yhat)*2",
    "-y*log(yhat)*1.001",
    "y*log(yhat)",
    "(yhat - y)^2",
    "-y*yhat",
    "-y*log(yhat) + yhat",  # +1 to every dL/dyhat (though softmax makes it irrelevant)
    "-y*log(yhat + 1)",
    "-maxpool(y)*log(yhat)",
])
def test_different_losses_have_different_fingerprints(problem, text: str) -> None:
    assert fp(problem, text) != fp(problem, "-y*log(yhat)")


def test_scaled_losses_share_a_class_but_not_with_the_unscaled(problem) -> None:
    twice = fp(problem, "-y*log(yhat)*2")
    assert fp(problem, "-y*2*log(yhat)") == twice
    assert fp(problem, "-(2*y)*log(yhat)") == twice
    assert fp(problem, "-y*log(yhat)*2 + y") == twice


def test_protected_forms_make_mirror_images_equivalent(problem) -> None:
    """log and sqrt act on |x| and inv keeps the sign, so these pairs have equal gradients,
    although in plain arithmetic log(yhat - 1) is undefined for yhat < 1."""
    assert fp(problem, "y*log(yhat - 1)") == fp(problem, "y*log(1 - yhat)")
    assert fp(problem, "y*sqrt(yhat - 1)") == fp(problem, "y*sqrt(1 - yhat)")
    assert fp(problem, "y*inv(yhat - 2)") == fp(problem, "-y*inv(2 - yhat)")
    assert fp(problem, "y*log(yhat - 1)") != fp(problem, "y*log(yhat + 1)")


def test_mean_c_of_yhat_has_the_gradient_of_yhat(problem) -> None:
    # d/dyhat sum(mean_c(yhat) broadcast over C) = C * (1/C) = 1, as for sum(yhat)
    assert fp(problem, "-y*log(yhat) + mean_c(yhat)") == fp(problem, "-y*log(yhat) + yhat")


def test_fingerprint_is_none_for_non_finite_loss_or_gradient(problem) -> None:
    # the loss overflows
    assert fp(problem, "exp(exp(exp(inv(y)*yhat)))") is None
    # the loss is finite (y * exp(-inf) = 0) but its gradient is 0 * inf = NaN
    assert fp(problem, "y*exp(-exp(inv(yhat - yhat)))") is None


def test_zero_gradient_has_a_fingerprint(problem) -> None:
    zero = fp(problem, "y*tanh(yhat - yhat)")
    assert zero is not None
    assert fp(problem, "0*yhat + y") == zero
    assert fp(problem, "y + yhat*0*y") == zero


def test_fingerprint_is_deterministic_and_depends_on_the_samples(problem) -> None:
    a = fp(problem, "-y*log(yhat)")
    labels = problem.labels
    again = DenseRejectionProblem(labels.clone(), 4, "miou")
    assert fp(again, "-y*log(yhat)") == a
    other_seed = DenseRejectionProblem(labels, 4, "miou", RejectionConfig(seed=1))
    assert fp(other_seed, "-y*log(yhat)") != a


def test_fingerprint_is_computed_in_float64(problem) -> None:
    # In float32 the rounding of these two rewrites would differ in many elements.
    probe = {"yhat": torch.softmax(problem.init_logits, 1), "y": problem.targets}
    a = branch_fingerprint(parse_formula("-y*log(yhat)"), probe, "yhat", 6)
    b = branch_fingerprint(parse_formula("-y*log(sqrt(yhat))*2"), probe, "yhat", 6)
    assert a == b
    assert probe["yhat"].dtype == torch.float32  # the caller's tensors are left alone
    assert not probe["yhat"].requires_grad


def test_branch_fingerprint_of_an_unused_prediction_input() -> None:
    probe = {"i": torch.rand(3, 1, 1, 1), "u": torch.rand(3, 1, 1, 1) + 1,
             "e": torch.rand(3, 1, 1, 1) + 2}
    only_i = branch_fingerprint(parse_formula("-log(i)"), probe, ("i", "u", "e"), 6)
    assert only_i is not None
    assert only_i != branch_fingerprint(parse_formula("-log(u)"), probe, ("i", "u", "e"), 6)
    assert only_i == branch_fingerprint(parse_formula("-log(i) + 0*e"), probe, ("i", "u", "e"),
                                        6)


# --- quantize ----------------------------------------------------------------------------------
def test_quantize_none_for_non_finite() -> None:
    assert quantize(np.array([1.0, np.nan]), 6) is None
    assert quantize(np.array([1.0, np.inf]), 6) is None
    assert quantize(np.array([-np.inf]), 6) is None


def test_quantize_zero_gradient() -> None:
    assert quantize(np.zeros(5), 6) == b"zero:5"
    assert quantize(np.zeros(5), 6) != quantize(np.zeros(6), 6)


def test_quantize_rounds_to_significant_digits() -> None:
    base = np.array([1.234567, -0.00123456, 98765.4321])
    assert quantize(base, 6) == quantize(base * (1 + 1e-9), 6)
    assert quantize(base, 6) != quantize(base * (1 + 1e-4), 6)
    assert quantize(np.array([1.2344]), 4) == quantize(np.array([1.2341]), 4)
    assert quantize(np.array([1.2344]), 5) != quantize(np.array([1.2341]), 5)
    assert quantize(np.array([1.0]), 6) != quantize(np.array([-1.0]), 6)


def test_quantize_has_one_representation_at_a_decade() -> None:
    # 9.9999996 rounds up to the next decade; it must equal 10.0 exactly
    assert quantize(np.array([9.9999996]), 6) == quantize(np.array([10.0]), 6)
    assert quantize(np.array([-0.099999999]), 6) == quantize(np.array([-0.1]), 6)


def test_quantize_rounds_every_element_on_its_own() -> None:
    # a small element is a value, not noise: no element is judged against the largest
    assert quantize(np.array([1.0, 1e-13]), 6) != quantize(np.array([1.0, 0.0]), 6)
    assert quantize(np.array([1e12, 3.0]), 6) != quantize(np.array([1e12, -3.0]), 6)
    assert quantize(np.array([1.0, 1.0000001]), 6) == quantize(np.array([1.0, 1.0]), 6)
    # the rule of searches created before: elements below 1e-9 of the largest become zero
    assert quantize(np.array([1.0, 1e-13]), 6, "global_cut") == \
        quantize(np.array([1.0, 0.0]), 6, "global_cut")
    assert quantize(np.array([1.0, -3e-12]), 6, "global_cut") == \
        quantize(np.array([1.0, 0.0]), 6, "global_cut")
    assert quantize(np.array([1.0, 1e-6]), 6, "global_cut") != \
        quantize(np.array([1.0, 0.0]), 6, "global_cut")


def test_combine_fingerprints() -> None:
    assert combine_fingerprints({"seg": "abc"}) == "abc"
    assert combine_fingerprints({"cls": "a", "box": None}) is None
    ab = combine_fingerprints({"cls": "a", "box": "b"})
    assert ab == combine_fingerprints({"box": "b", "cls": "a"})  # order independent
    assert ab != combine_fingerprints({"cls": "b", "box": "a"})  # branch names matter
    assert ab is not None and len(ab) == 32
