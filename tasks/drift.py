"""Drift: does what a scoring run saw look like what the champion was tested on?

At training time the champion gets a reference: for each statistic below, the bins and the share
of its test pictures in each. A scoring run bins its own pictures the same way and scores each
statistic by the population stability index, PSI = Σ (a − e)·ln(a / e) over the bins (a: this
run's share, e: the reference's). PSI rather than Jensen–Shannon: it is the figure monitoring
people already read (< 0.1 no shift, 0.1–0.25 moderate, > 0.25 significant), and for small
shifts it is Pearson's χ²/n, so its noise is known: about (bins − 1)/n for an honest batch.

The statistics, and why these:
- predicted_digit: the mix of predicted digits (10 categories): a folder of one form's digits,
  or a model that reads everything as one digit. (Other writers write every digit: it stays low.)
- confidence: the calibrated confidence in fixed bins (the model's own sense of "unusual").
- review_rate: the share below the review threshold (2 categories): what a person will feel.
- ink: the share of the 28×28 canvas that is ink (> 0.5): pen weight and digit size.
- stroke_width: 2·area / perimeter of the ink, in pixels (a stroke of width w and length L has
  area wL and perimeter ≈ 2L): thick markers, thin pens, blobby upscaled digits.
- spread_aspect: horizontal over vertical spread of the ink (the square root of the ratio of the
  second moments). Not the bounding box's aspect: boxes are whole pixels, so MNIST's values pile
  up on a few fractions, quantile bins split those ties, and a box a pixel shorter after the
  scoring path's resampling scored PSI 0.10–0.21 on 20 honest scan batches (bench/drift.py);
  the moment ratio is continuous and scored 0.01–0.03 on the same batches.

The reference is made from what evaluation already holds: MNIST's test arrays as the model sees
them (x_test / 255) with the model's probabilities on them, plus the user's test set, which has
been through tasks.images already. It costs next to nothing at training time (0.2 s; 3 s at a
load of 15 on 2 cores). Measured by bench/drift.py (seed preset, the 10,000 test digits): the
arrays saved as 28×28 PNGs and read back by preprocess keep their statistics to 0.1 % (ink
0.1338 | 0.1338, stroke 2.086 | 2.087), so "the arrays through the file path" buys nothing; what
moves them is a scan's rendering (enlarged, rotated, blurred, JPEG'd): scans of the same digits
read back with 7 % less ink (0.124) and 4 % thinner strokes (2.008). Against the arrays'
reference, 20 honest scan batches of 500 scored at most 0.11 (ink; median 0.077), well under
0.25. A reference made from scans would bring that median to 0.02, but costs 306 s of a core
per model (25.5 ms to render a picture, 5.1 ms to read it) and would bake the demo's own
rendering into the reference: a user's scanner is not tasks.demo.render_scan.

Nothing here imports Prefect or TensorFlow: it runs on the arrays scoring already holds. Give it
the rows that were read (no error rows): prob N×10 (calibrated), x N×28×28.
"""

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EPSILON = 1e-4  # the share an empty bin counts as: an empty bin costs e·ln(e/ε), not infinity
INK_LEVEL = 0.5  # a pixel brighter than this is ink (inputs are white ink on black, in [0, 1])
QUANTILE_BINS = 10  # input statistics: deciles of the reference
# Fixed, so references of different models compare; fine near 1, where most confidences are.
CONFIDENCE_EDGES = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]
# A batch smaller than this is never an alarm: with n pictures an honest batch's PSI is about
# (bins − 1)/n, and its rare bins (low confidence, a thin digit) are one or two pictures away
# from a large term. Batches drawn from the reference's own pictures would alarm 11.5 % of the
# time at n = 100, 1 % at 150, 0.2 % at 200 (bench/drift.py).
MIN_IMAGES = 200
# PSI over which a statistic alarms. 0.25, the usual "significant shift": honest scan batches of
# 500 scored at most 0.11, other writers' at least 0.40 on confidence and 1.1 on each input
# statistic (bench/drift.py). review_rate has two bins, and its PSI moves less for the same
# change (7.5 % → 15 % is only 0.058), so it gets 0.1: the rate about 2.3 times the reference's
# (7.5 % → 18 %), nine standard deviations of an honest 500-picture batch; honest batches scored
# at most 0.025, other writers' at least 0.35. predicted_digit alarms on a changed mix only:
# other writers write every digit, and scored 0.05–0.12 there. The input statistics alarm at
# 0.5: they move with the writers as much as with the pen. `make run`'s demo folder (the first
# 300 test digits as scans) scored 0.35 on ink and its first 500 0.26, where the same digits
# as arrays scored 0.11 and 0.09 (the test set's first digits are not its average writer;
# measured as tests/test_drift.py's last test does, against x_test / 255's reference), and
# a scan reads back with 7 % less ink than its array; other writers scored at least 1.1 on each.
THRESHOLDS = {"predicted_digit": 0.25, "confidence": 0.25, "review_rate": 0.1,
              "ink": 0.5, "stroke_width": 0.5, "spread_aspect": 0.5}
INPUT_STATISTICS = ("ink", "stroke_width", "spread_aspect")


def input_statistics(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per picture of x (N×28×28 in [0, 1]): ink share, stroke width and spread aspect."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), 28, 28)
    mask = x > INK_LEVEL
    area = mask.sum(axis=(1, 2))
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))  # ink on the canvas edge has a border too
    perimeter = ((padded[:, 1:] != padded[:, :-1]).sum(axis=(1, 2))
                 + (padded[:, :, 1:] != padded[:, :, :-1]).sum(axis=(1, 2)))
    mass = np.maximum(x.sum(axis=(1, 2)), 1e-9)
    where = np.arange(28.0)
    rows, cols = x.sum(axis=2) / mass[:, None], x.sum(axis=1) / mass[:, None]
    row_var = rows @ where**2 - (rows @ where) ** 2
    col_var = cols @ where**2 - (cols @ where) ** 2
    return {"ink": area / 784.0,
            "stroke_width": 2.0 * area / np.maximum(perimeter, 1),
            "spread_aspect": np.sqrt(col_var / np.maximum(row_var, 1e-9))}


def batch_values(prob: np.ndarray, x: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """The value each statistic bins, per picture."""
    confidence = prob.max(axis=1)
    return {"predicted_digit": prob.argmax(axis=1).astype(np.float64),
            "confidence": confidence.astype(np.float64),
            "review_rate": (confidence < threshold).astype(np.float64),
            **input_statistics(x)}


def shares(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """The share of values in each bin; bin i is [edges[i-1], edges[i]), open at both ends."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def bin_labels(edges: list[float]) -> list[str]:
    bounds = ["−∞", *(f"{e:.4g}" for e in edges), "∞"]
    return [f"{low}–{high}" for low, high in zip(bounds[:-1], bounds[1:])]


def make_reference(prob: np.ndarray, x: np.ndarray, threshold: float) -> dict:
    """The champion's reference from its test pictures (prob: N×10, x: N×28×28): JSON-able."""
    values = batch_values(prob, x, threshold)
    edges = {"predicted_digit": [d + 0.5 for d in range(9)], "confidence": CONFIDENCE_EDGES,
             "review_rate": [0.5]}
    for name in INPUT_STATISTICS:
        # Deciles. Tied values merge two into one bin; a cut at the minimum would leave the bin
        # below it empty by construction, so it goes.
        cuts = np.quantile(values[name], np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1])
        edges[name] = sorted({round(float(c), 6) for c in cuts if c > values[name].min()})
    labels = {"predicted_digit": [str(d) for d in range(10)], "review_rate": ["accepted", "review"]}
    return {"images": int(len(prob)), "threshold": float(threshold),
            "statistics": {name: {"edges": list(map(float, edges[name])),
                                  "labels": labels.get(name, bin_labels(edges[name])),
                                  "proportions": [round(float(p), 6)
                                                  for p in shares(values[name], edges[name])]}
                           for name in THRESHOLDS}}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors; empty bins count as EPSILON."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_report(reference: dict, prob: np.ndarray, x: np.ndarray, threshold: float) -> dict:
    """This batch against the reference: a PSI per statistic, which are over threshold, alarm."""
    if abs(reference["threshold"] - threshold) > 1e-9:
        # Review rates at two thresholds are not the same quantity: a wiring error, not drift.
        raise ValueError(f"the reference was made with review threshold {reference['threshold']}, "
                         f"this run reviews below {threshold}")
    return compare(reference, batch_values(prob, x, threshold), len(prob))


def compare(reference: dict, values: dict[str, np.ndarray], images: int) -> dict:
    """drift_report for values already computed (scoring gathers them chunk by chunk)."""
    scores, changes = {}, {}
    for name, ref in reference["statistics"].items():
        seen = shares(values[name], ref["edges"])
        scores[name] = round(psi(ref["proportions"], seen), 4)
        moved = np.abs(seen - np.asarray(ref["proportions"]))
        # The last of equal moves: with two bins that names "review", the one a person reads.
        biggest = len(moved) - 1 - int(np.argmax(moved[::-1]))
        changes[name] = {"bin": ref["labels"][biggest], "reference": ref["proportions"][biggest],
                         "seen": round(float(seen[biggest]), 4)}
    enough = images >= MIN_IMAGES
    alarming = [n for n, s in scores.items() if enough and s > THRESHOLDS[n]]
    return {"alarm": bool(alarming), "scores": scores, "thresholds": dict(THRESHOLDS),
            "alarming": alarming, "images": int(images), "min_images": MIN_IMAGES,
            "largest_change": changes}


def drift_against(references: dict[str, dict], values: dict[str, np.ndarray], images: int) -> dict:
    """This run against each test set's reference (MNIST's, yours): the report of the nearest,
    alarming only when the run is far from every one. Your own hand is far from MNIST's by
    design; scoring your scans must not alarm every run because of it."""
    reports = {name: compare(ref, values, images) for name, ref in references.items()}
    nearest = min(reports, key=lambda name: sum(reports[name]["scores"].values()))
    alarm = all(r["alarm"] for r in reports.values())
    return {**reports[nearest], "reference": nearest, "alarm": alarm,
            "alarming": reports[nearest]["alarming"] if alarm else []}


def drift_event_payload(report: dict, run_id: str, model_version: str) -> dict:
    """The payload of the digitflow.scoring.drift event: enough to act on without the report
    (an automation can template any of it, e.g. {{ event.payload.alarming }})."""
    return {"run_id": run_id, "model_version": model_version, "images": report["images"],
            "alarming": report["alarming"], "scores": report["scores"],
            "thresholds": report["thresholds"]}


def drift_figure(report: dict) -> "Figure":
    """PSI per statistic as bars against their thresholds; the alarming ones in red."""
    from matplotlib.figure import Figure  # imported when drawn; no pyplot, no global state
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    names = list(report["scores"])
    fig = Figure(figsize=(6, 0.4 * len(names) + 1.2), layout="constrained")  # no label cut off
    ax = fig.subplots()
    # log scale: honest scores are ~0.01-0.05, a foreign batch's reach 1-4
    scores = [max(report["scores"][n], 1e-3) for n in names]
    low = 10 ** math.floor(math.log10(min(scores + [0.01])))  # whole decades, the bars from there
    high = 10 ** math.ceil(math.log10(max(scores + list(report["thresholds"].values())) * 1.2))
    ax.barh(names, [s - low for s in scores], left=low,
            color=["tab:red" if n in report["alarming"] else "tab:blue" for n in names])
    ax.scatter([report["thresholds"][n] for n in names], names, marker="|", s=300, color="black")
    # The marks are named in the axis label: a legend box sat on the longest bars
    ax.set(xscale="log", xlim=(low, high), xlabel="PSI (black mark: the statistic's threshold)",
           title=f"drift of {report['images']} pictures")
    # One plain label per decade (0.01, 0.1, 1): the minor ticks' labels overlapped
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_yaxis()
    return fig


def drift_markdown(report: dict) -> list[str]:
    """Lines of the scoring report's drift section: a verdict and one table row per statistic."""
    if report["images"] < report["min_images"]:
        verdict = (f"{report['images']} pictures: fewer than {report['min_images']}, too few to "
                   "call drift (scores shown, no alarm).")
    elif report["alarm"]:
        verdict = f"**Drift alarm**: {', '.join(report['alarming'])} over threshold."
    else:
        verdict = "No drift: every statistic is within its threshold."
    lines = ["## Drift against the champion's reference", "", verdict, "",
             "| statistic | PSI | threshold | largest change (bin: reference → this run) |",
             "|---|---|---|---|"]
    for name, score in report["scores"].items():
        change = report["largest_change"][name]
        mark = " ⚠" if name in report["alarming"] else ""
        lines.append(f"| {name}{mark} | {score:.3f} | {report['thresholds'][name]} | "
                     f"{change['bin']}: {change['reference']:.1%} → {change['seen']:.1%} |")
    lines += ["", "PSI: < 0.1 no shift, 0.1–0.25 moderate, > 0.25 significant."]
    return lines
