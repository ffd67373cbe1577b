"""Temperature scaling, ECE and the review threshold, on synthetic probabilities (no model)."""

import json

import numpy as np
import pytest

from tasks.calibrate import (ACCEPT_NOTHING, MAX_ERROR, Calibration, calibrated, calibration_record,
                             fit_temperature, review_threshold)
from tasks.metrics import expected_calibration_error, reliability_bins


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def honest(n: int = 4000, sharpen: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) itself, so softmax(z) is calibrated; the probabilities
    returned are softmax(sharpen × z): overconfident by a temperature of `sharpen`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, (n, 10))
    truth = softmax(z)
    y = np.minimum((truth.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1), 9)
    return softmax(sharpen * z).astype(np.float32), y


def rows(confidences: list[float]) -> np.ndarray:
    """One probability row per confidence, digit 0 winning, the rest shared by the others."""
    c = np.asarray(confidences, dtype=np.float32)[:, None]
    return np.hstack([c, np.repeat((1 - c) / 9, 9, axis=1)]).astype(np.float32)


def test_overconfident_probabilities_get_a_temperature_above_one_and_lower_ece():
    prob, y = honest(sharpen=3.0)
    t = fit_temperature(prob, y)
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(prob, y)
    after = expected_calibration_error(calibrated(prob, t), y)
    assert before > 0.1 and after < 0.03


def test_calibrated_probabilities_keep_a_temperature_near_one():
    prob, y = honest()
    assert fit_temperature(prob, y) == pytest.approx(1.0, abs=0.08)
    assert fit_temperature(prob, y) == fit_temperature(prob, y)  # deterministic


def test_calibrated_keeps_the_argmax_sums_to_one_and_is_float32():
    prob, _ = honest(n=500, sharpen=4.0)
    prob[0] = np.eye(10, dtype=np.float32)[3]  # exact zeros: a saturated softmax
    for t in (0.5, 1.0, 2.5, 20.0):
        out = calibrated(prob, t)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out.argmax(axis=1), prob.argmax(axis=1))
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(calibrated(prob, 1.0), prob, atol=1e-6)
    assert calibrated(prob, 2.0).max(axis=1).mean() < prob.max(axis=1).mean()  # T > 1 softens


def test_ece_is_zero_when_accuracy_matches_confidence_in_every_bin():
    prob = rows([0.8] * 10 + [0.5] * 4)
    y = np.array([0] * 8 + [1] * 2 + [0] * 2 + [1] * 2)
    assert expected_calibration_error(prob, y) == pytest.approx(0.0, abs=1e-6)


def test_ece_weights_each_bins_gap_by_its_share():
    # 10 at 0.9 with 6 right (gap 0.3) and 30 at 0.5 with 15 right (gap 0): 0.25 × 0.3, where
    # an unweighted mean over the filled bins would say 0.15
    prob = rows([0.9] * 10 + [0.5] * 30)
    y = np.array([0] * 6 + [1] * 4 + [0] * 15 + [1] * 15)
    assert expected_calibration_error(prob, y) == pytest.approx(0.075, abs=1e-6)


def test_reliability_bins_cover_zero_to_one_and_count_every_prediction():
    prob = rows([1.0, 1.0, 0.95, 0.5, 0.2])
    y = np.array([0, 0, 1, 0, 0])
    bins = reliability_bins(prob, y, bins=15)
    assert len(bins) == 15 and bins[0]["lower"] == 0 and bins[-1]["upper"] == 1
    assert sum(b["count"] for b in bins) == 5
    top = bins[-1]  # (14/15, 1]: the two at 1.0 and the one at 0.95
    assert top["count"] == 3 and top["accuracy"] == pytest.approx(2 / 3)
    assert bins[1]["count"] == 0 and bins[1]["accuracy"] is None
    json.dumps(bins)  # plain values, for metadata.json


def test_review_threshold_takes_the_largest_accepted_set_within_the_error():
    prob = rows([0.99, 0.98, 0.97, 0.96, 0.95])
    y = np.array([0, 0, 1, 0, 0])  # the third most confident is wrong
    # Prefix error rates: 0, 0, 1/3, 1/4, 1/5. At 0.25 the third prefix fails, the fifth passes.
    assert review_threshold(prob, y, max_error=0.25) == pytest.approx(0.95)
    assert review_threshold(prob, y, max_error=0.2) == pytest.approx(0.95)
    assert review_threshold(prob, y, max_error=0.1) == pytest.approx(0.98)


def test_review_threshold_meets_its_error_on_its_own_data():
    prob, y = honest(n=3000, sharpen=2.0, seed=1)
    t = review_threshold(prob, y, max_error=0.05)
    accepted = prob.max(axis=1) >= t
    assert 0.2 < accepted.mean() < 1.0
    assert (prob.argmax(axis=1) != y)[accepted].mean() <= 0.05
    # One more prediction in (the next lower confidence) breaks it: nothing is flagged needlessly.
    below = np.sort(prob.max(axis=1)[~accepted])[::-1]
    assert (prob.argmax(axis=1) != y)[prob.max(axis=1) >= below[0]].mean() > 0.05


def test_review_threshold_does_not_split_ties():
    # Two at 0.9, the second wrong: a cut after the first 0.9 (error 0) is no threshold at all,
    # since confidence ≥ 0.9 accepts both (error 1/3).
    prob = rows([0.95, 0.9, 0.9])
    y = np.array([0, 0, 1])
    assert review_threshold(prob, y, max_error=0.4) == pytest.approx(0.9)
    assert review_threshold(prob, y, max_error=0.3) == pytest.approx(0.95)


def test_review_threshold_edge_cases():
    prob = rows([1.0, 0.9, 0.6])
    assert review_threshold(prob, np.zeros(3, dtype=int)) == pytest.approx(0.6)  # no errors: none flagged
    t = review_threshold(prob, np.array([1, 0, 0]))  # the most confident is wrong
    assert t == ACCEPT_NOTHING
    assert Calibration(1.0, t, 0.005, 3).review(prob).all()  # even a confidence of exactly 1.0


def test_calibration_record_is_json_and_round_trips():
    val, val_y = honest(n=2000, sharpen=2.0, seed=2)
    test, test_y = honest(n=1000, sharpen=2.0, seed=3)
    record = json.loads(json.dumps(calibration_record(val, val_y, {"mnist": (test, test_y)})))
    calibration = Calibration.from_record(record)
    assert calibration.temperature == pytest.approx(2.0, rel=0.15)
    assert calibration.validation_images == 2000 and calibration.max_error == MAX_ERROR
    mnist = record["tests"]["mnist"]
    assert mnist["ece_after"] < mnist["ece_before"]
    review = calibration.review(calibration.probabilities(test))
    assert mnist["review_rate"] == pytest.approx(review.mean())
    assert record["validation"]["accepted_accuracy"] >= 1 - MAX_ERROR
