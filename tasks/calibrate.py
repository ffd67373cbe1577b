"""Calibrated probabilities and the review flag, both fitted on the validation split.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar T
divides the logits, fitted by the negative log-likelihood of the validation split. It moves every
confidence towards (T > 1) or away from (T < 1) uniform and never changes which digit wins, so
accuracy is untouched and the model file stays as it is: T lives in the model's metadata.

The review threshold is the calibrated confidence below which a prediction goes to a person: the
lowest one at which the validation split's accepted predictions are still right often enough.

Plain numpy and scipy, no Keras and no Prefect: scoring applies a calibration without either.
"""

from dataclasses import asdict, dataclass

import numpy as np

from tasks.metrics import expected_calibration_error

BINS = 15  # Guo et al.'s ECE bins
# The accepted predictions' error the threshold allows on the validation split. The issue asks
# for at most 0.5 %; 0.2 % is chosen because the cnn preset already errs on 0.52 % of validation,
# so at 0.5 % it flagged 0.03 % and accepted scan-like digits only 99.22 % correct, catching 18 %
# of other writers' errors. At 0.2 %: 1.7 % flagged, 99.78 % accepted correct, 82 % caught
# (bench/calibration.py, docs/BENCHMARKS.md); scans are a little harder than MNIST's validation.
MAX_ERROR = 0.002
FLOOR = 1e-12  # a softmax output can be exactly 0; its log would be -inf
T_RANGE = (0.05, 20.0)  # far wider than any fitted T (Guo et al. report 1–3)
# Above every float32 confidence (the next float32 after 1.0): "accept nothing", whatever the
# rounding of a stored float32 probability, while staying a plain JSON number.
ACCEPT_NOTHING = float(np.nextafter(np.float32(1), np.float32(2)))


def _logits(prob: np.ndarray) -> np.ndarray:
    # The models end in softmax: log-probabilities are the logits up to a per-row constant,
    # which softmax ignores. float64: at T = 20 float32 would round near-ties together.
    return np.log(np.clip(np.asarray(prob, dtype=np.float64), FLOOR, 1.0))


def calibrated(prob: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(prob) / T) per row, as float32; the same argmax, rows summing to 1."""
    scaled = _logits(prob) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)  # exp cannot overflow; softmax is unchanged
    e = np.exp(scaled)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_temperature(prob: np.ndarray, y: np.ndarray) -> float:
    """The T in T_RANGE minimising the NLL of calibrated(prob, T) on (prob, y); deterministic.

    The NLL is convex in 1/T (a log-sum-exp minus a linear term), so it has one minimum along
    log T too, and a bounded Brent search finds it without a starting guess.
    """
    # Imported here: scoring applies a temperature and never fits one.
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    logits = _logits(prob)
    true = logits[np.arange(len(y)), y]

    def nll(log_t: float) -> float:
        t = np.exp(log_t)
        return float(np.mean(logsumexp(logits / t, axis=1) - true / t))

    found = minimize_scalar(nll, bounds=np.log(T_RANGE), method="bounded",
                            options={"xatol": 1e-6})
    return float(np.exp(found.x))


def review_threshold(prob_calibrated: np.ndarray, y: np.ndarray,
                     max_error: float = MAX_ERROR) -> float:
    """The lowest calibrated confidence t such that the predictions with confidence ≥ t have an
    error rate ≤ max_error on (prob_calibrated, y): those below t are flagged for review.

    How: sort by confidence, most confident first; the accepted set is a prefix, and its error
    rate is the cumulative errors over its size. Take the largest prefix whose rate is within
    max_error (not the first prefix to exceed it: the rate goes up and down along the way),
    counting only cuts between two different confidences, since a threshold cannot split a tie.
    Why: among the thresholds that meet the error target on validation it flags the fewest.

    Edge cases: no errors at all → the lowest confidence (flag nothing: the whole split meets the
    target, and no evidence says where errors would be); even the most confident prediction
    wrong → ACCEPT_NOTHING (flag everything). With few errors the chosen prefix follows noise
    (one error moves the cut of a 200-picture split by a lot); the presets' 12,000 validation
    digits hold 70–250 errors, enough for a stable cut at 0.5 %.
    """
    confidence = prob_calibrated.max(axis=1)
    wrong = prob_calibrated.argmax(axis=1) != y
    order = np.argsort(-confidence, kind="stable")
    confidence, wrong = confidence[order], wrong[order]
    accepted = np.arange(1, len(y) + 1)
    # errors ≤ max_error × size, in integers' terms: 5/1000 must count as within 0.005
    within = np.cumsum(wrong) <= max_error * accepted + 1e-9
    cut = np.append(confidence[:-1] > confidence[1:], True)
    ok = np.flatnonzero(within & cut)
    return float(confidence[ok[-1]]) if len(ok) else ACCEPT_NOTHING


@dataclass(frozen=True)
class Calibration:
    """What scoring needs: logits divided by `temperature`, confidences under `threshold` flagged."""
    temperature: float
    threshold: float
    max_error: float
    validation_images: int

    def probabilities(self, prob: np.ndarray) -> np.ndarray:
        return calibrated(prob, self.temperature)

    def review(self, prob_calibrated: np.ndarray) -> np.ndarray:
        return prob_calibrated.max(axis=1) < self.threshold

    @classmethod
    def from_record(cls, record: dict) -> "Calibration":
        return cls(**{name: record[name] for name in cls.__dataclass_fields__})


def fit_calibration(val_prob: np.ndarray, val_y: np.ndarray,
                    max_error: float = MAX_ERROR) -> Calibration:
    temperature = fit_temperature(val_prob, val_y)
    threshold = review_threshold(calibrated(val_prob, temperature), val_y, max_error)
    return Calibration(temperature, threshold, max_error, int(len(val_y)))


def set_figures(calibration: Calibration, prob: np.ndarray, y: np.ndarray,
                bins: int = BINS) -> dict:
    """One labelled set under a calibration: ECE before and after, the share flagged, the accuracy
    of the accepted predictions and the share of the errors the flag catches (None if none)."""
    after = calibration.probabilities(prob)
    review = calibration.review(after)
    wrong = prob.argmax(axis=1) != y
    accepted = ~review
    return {
        "images": int(len(y)), "accuracy": float(1 - wrong.mean()),
        "ece_before": expected_calibration_error(prob, y, bins),
        "ece_after": expected_calibration_error(after, y, bins),
        "review_rate": float(review.mean()),
        "accepted_accuracy": float(1 - wrong[accepted].mean()) if accepted.any() else None,
        "errors_flagged": float(review[wrong].mean()) if wrong.any() else None,
    }


def calibration_record(val_prob: np.ndarray, val_y: np.ndarray,
                       tests: dict[str, tuple[np.ndarray, np.ndarray]],
                       max_error: float = MAX_ERROR, bins: int = BINS) -> dict:
    """The calibration fitted on the validation split and its figures on it and on each test set
    (e.g. "mnist", "yours"), as plain JSON values for the model's metadata.json."""
    calibration = fit_calibration(val_prob, val_y, max_error)
    return {**asdict(calibration), "method": "temperature scaling (Guo et al. 2017), NLL on the "
            "validation split; threshold: lowest confidence whose accepted validation "
            f"predictions err at most {max_error:.2%}", "bins": bins,
            "validation": set_figures(calibration, val_prob, val_y, bins),
            "tests": {name: set_figures(calibration, prob, y, bins)
                      for name, (prob, y) in tests.items()}}
