"""Drift scores of a scoring batch against a reference, on small synthetic pictures (no model)."""

import json

import numpy as np
import pytest

from tasks.drift import (MIN_IMAGES, THRESHOLDS, drift_event_payload, drift_figure, drift_markdown,
                         drift_report, input_statistics, make_reference, psi, batch_values)

THRESHOLD = 0.9


def boxes(n: int, rng: np.random.Generator, thickness: tuple[int, int] = (1, 3)) -> np.ndarray:
    """n pictures of a hollow rectangle, of random size, place and stroke thickness."""
    h, w = rng.integers(12, 21, n), rng.integers(6, 21, n)
    top, left = rng.integers(0, 29 - h), rng.integers(0, 29 - w)
    t = rng.integers(*thickness, n, endpoint=True)
    r, c = np.ogrid[:28, :28]
    r, c = r[None], c[None]
    inside = lambda pad: ((r >= (top + pad)[:, None, None]) & (r < (top + h - pad)[:, None, None])
                          & (c >= (left + pad)[:, None, None]) & (c < (left + w - pad)[:, None, None]))
    return (inside(np.zeros(n, int)) & ~inside(t)).astype(np.float32)


def probabilities(n: int, rng: np.random.Generator, digits=range(10)) -> np.ndarray:
    """Softmax outputs, mostly confident, predicting a digit drawn from `digits`."""
    logits = rng.normal(0, 1, (n, 10))
    logits[np.arange(n), rng.choice(list(digits), n)] += rng.uniform(2, 12, n)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def reference() -> dict:
    rng = np.random.default_rng(0)
    return make_reference(probabilities(2000, rng), boxes(2000, rng), THRESHOLD)


def test_statistics_of_a_bar_and_its_transpose():
    bar = np.zeros((1, 28, 28), dtype=np.float32)
    bar[0, 9:19, 13:15] = 1.0  # 10 tall, 2 wide
    bar[0, 9:19, 15] = 0.3  # an anti-aliased rim: not ink
    upright, lying = input_statistics(bar), input_statistics(bar.transpose(0, 2, 1))
    assert upright["ink"][0] == pytest.approx(20 / 784)
    assert upright["stroke_width"][0] == pytest.approx(2 * 20 / 24)  # 2·area / perimeter
    assert upright["spread_aspect"][0] < 0.25
    assert lying["spread_aspect"][0] == pytest.approx(1 / upright["spread_aspect"][0])


def test_the_same_population_scores_near_zero_and_does_not_alarm(reference):
    rng = np.random.default_rng(1)
    report = drift_report(reference, probabilities(1000, rng), boxes(1000, rng), THRESHOLD)
    assert set(report["scores"]) == set(THRESHOLDS)
    assert max(report["scores"].values()) < 0.05, report["scores"]
    assert not report["alarm"] and report["alarming"] == []
    assert report["images"] == 1000


def test_thicker_strokes_alarm_and_name_the_statistic(reference):
    rng = np.random.default_rng(2)
    report = drift_report(reference, probabilities(500, rng), boxes(500, rng, (4, 5)), THRESHOLD)
    assert report["alarm"]
    assert "stroke_width" in report["alarming"]
    assert "predicted_digit" not in report["alarming"]


def test_a_run_of_threes_alarms_on_the_digit_mix(reference):
    rng = np.random.default_rng(3)
    report = drift_report(reference, probabilities(500, rng, digits=[3]), boxes(500, rng), THRESHOLD)
    assert report["alarming"] == ["predicted_digit"]
    assert report["largest_change"]["predicted_digit"]["bin"] == "3"


def test_empty_bins_give_finite_scores(reference):
    assert psi(np.array([0.5, 0.5, 0.0]), np.array([1.0, 0.0, 0.0])) == pytest.approx(
        0.5 * np.log(0.5 / 1e-4) + (1 - 0.5) * np.log(1 / 0.5), rel=1e-3)
    assert psi(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0
    # Every picture the same: all but one bin of each input statistic empty.
    x = np.repeat(boxes(1, np.random.default_rng(4)), 300, axis=0)
    report = drift_report(reference, probabilities(300, np.random.default_rng(4)), x, THRESHOLD)
    assert all(np.isfinite(s) for s in report["scores"].values())
    assert report["alarm"]


def test_small_batches_never_alarm(reference):
    rng = np.random.default_rng(5)
    n = MIN_IMAGES - 1
    report = drift_report(reference, probabilities(n, rng, digits=[7]), boxes(n, rng, (4, 5)), THRESHOLD)
    assert report["scores"]["predicted_digit"] > 1  # the scores are still there to read
    assert not report["alarm"] and report["alarming"] == []
    assert "too few" in "\n".join(drift_markdown(report))


def test_input_statistics_are_binned_by_the_reference_deciles(reference):
    for name in ("ink", "stroke_width", "spread_aspect"):
        shares = reference["statistics"][name]["proportions"]
        assert len(shares) == len(reference["statistics"][name]["edges"]) + 1
        assert sum(shares) == pytest.approx(1)
    # Ties merge deciles (these boxes' strokes are 1, 2 or 3 pixels wide): fewer bins, none empty.
    assert len(reference["statistics"]["stroke_width"]["proportions"]) < 10
    assert min(reference["statistics"]["stroke_width"]["proportions"]) > 0.05
    assert reference["statistics"]["spread_aspect"]["proportions"] == pytest.approx([0.1] * 10, abs=0.01)


def test_the_reference_survives_json(reference):
    again = json.loads(json.dumps(reference))
    assert again == reference
    rng = np.random.default_rng(6)
    prob, x = probabilities(400, rng), boxes(400, rng, (3, 5))
    report = drift_report(again, prob, x, THRESHOLD)
    assert report == drift_report(reference, prob, x, THRESHOLD)
    assert json.loads(json.dumps(report)) == report


def test_a_reference_made_at_another_review_threshold_is_refused(reference):
    rng = np.random.default_rng(7)
    with pytest.raises(ValueError, match="threshold"):
        drift_report(reference, probabilities(300, rng), boxes(300, rng), 0.5)


def test_the_event_payload_and_the_table_name_what_alarmed(reference):
    rng = np.random.default_rng(8)
    report = drift_report(reference, probabilities(500, rng), boxes(500, rng, (4, 5)), THRESHOLD)
    payload = drift_event_payload(report, "run-1", "abc123")
    assert payload["run_id"] == "run-1" and payload["model_version"] == "abc123"
    assert payload["alarming"] == report["alarming"]
    assert payload["scores"] == report["scores"]
    assert payload["thresholds"]["stroke_width"] == THRESHOLDS["stroke_width"]
    json.dumps(payload)
    table = drift_markdown(report)
    assert any(line.startswith("| stroke_width ⚠ |") for line in table)
    assert sum(line.startswith("| ") for line in table) == 1 + len(THRESHOLDS)  # header + rows


def test_the_figure_has_a_bar_per_statistic_red_where_it_alarms(reference):
    rng = np.random.default_rng(9)
    report = drift_report(reference, probabilities(500, rng), boxes(500, rng, (4, 5)), THRESHOLD)
    axes = drift_figure(report).axes[0]
    bars = axes.patches
    assert len(bars) == len(THRESHOLDS)
    red = [name for name, bar in zip(report["scores"], bars) if bar.get_facecolor()[0] > 0.5]
    assert red == report["alarming"]
    # Each bar ends at its score on the log scale, which shows a plain label per decade only
    for bar, score in zip(bars, report["scores"].values()):
        assert bar.get_x() + bar.get_width() == pytest.approx(max(score, 1e-3))
    assert axes.get_xlim()[0] <= min(bar.get_x() for bar in bars)
    assert axes.xaxis.get_major_formatter()(0.1, 0) == "0.1"
    assert axes.xaxis.get_minor_formatter()(0.2, 0) == ""


def test_a_run_near_any_reference_does_not_alarm():
    from tasks.drift import drift_against

    rng = np.random.default_rng(0)
    near, far = (rng.dirichlet(np.ones(10) * a, 600).astype(np.float32) for a in (0.05, 5.0))
    x = np.zeros((600, 28, 28), np.float32)
    x[:, 8:20, 12:16] = 1.0
    references = {"mnist": make_reference(near, x, 0.9), "yours": make_reference(far, x, 0.9)}
    values = batch_values(far, x, 0.9)
    report = drift_against(references, values, 600)
    assert not report["alarm"] and report["reference"] == "yours" and report["alarming"] == []
    alone = drift_against({"mnist": references["mnist"]}, values, 600)
    assert alone["alarm"] and "confidence" in alone["alarming"]


def test_the_demo_scans_stay_quiet_and_other_writers_alarm_on_every_input_statistic(mnist, tmp_path):
    """Against MNIST's test set as the model sees it: `make run`'s demo folder (the first 300 test
    digits rendered as scans) must not raise the review queue; 300 digits by other writers must."""
    from tasks.demo import make_demo_folder, make_other_writers_folder
    from tasks.drift import INPUT_STATISTICS, compare
    from tasks.files import list_images, read_image

    x_test, y_test = mnist["x_test"], mnist["y_test"]
    statistics = make_reference(np.eye(10)[y_test], x_test / 255, THRESHOLD)["statistics"]
    inputs_only = {"statistics": {n: statistics[n] for n in INPUT_STATISTICS}}

    def scores(folder):
        x = np.stack([x for _, x, _ in map(read_image, list_images(folder)) if x is not None])
        return compare(inputs_only, input_statistics(x[:300]), 300)

    make_demo_folder(x_test, y_test, tmp_path / "demo", count=300)
    make_other_writers_folder(tmp_path / "others")
    demo, others = scores(tmp_path / "demo"), scores(tmp_path / "others")
    assert not demo["alarm"], demo["scores"]
    assert set(others["alarming"]) == set(INPUT_STATISTICS), others["scores"]
