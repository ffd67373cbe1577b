"""Drift: do honest scan batches stay quiet, and do other writers' digits raise the alarm?

    .venv/bin/python bench/drift.py MODEL.keras [--batches 20] [--size 500] [--workers 2]

MODEL.keras is a trained model (e.g. the `model_path` `digitflow train` prints). The reference is
made as the product makes it at training time (tasks/drift.py): the model's probabilities on
MNIST's 10,000 test arrays as evaluation sees them (x_test / 255) and the same arrays' input
statistics. Calibrated probabilities and the review threshold come from tasks/calibrate.py fitted
on the validation split (the last 20 % of the training images, as validation_split=0.2); every
figure is also printed with raw probabilities and the threshold at the 5th percentile of the
validation confidence ("p5", the stand-in used before calibration existed).

Honest batches: the test digits in a random order, cut into `--batches` disjoint batches of
`--size`; each digit rendered as a scan (tasks.demo.render_scan, a different RNG seed per batch),
encoded in the demo's formats in turn, and read back by tasks.images.preprocess: the scoring
path from file bytes to model input. Target: at most 1 alarm in 20. Other writers: scikit-learn's
optdigits as pictures (tasks.demo.make_other_writers_folder), each file preprocessed, in
disjoint batches of `--size`. Target: every one alarms.

Also measured: how far the file paths move each input statistic from the raw test arrays and
what they cost per picture (the reason the reference is made from the arrays), a bounding-box
aspect beside the spread aspect used, a reference made from scans instead, the false alarms of
batches drawn from the reference's own pictures by size (MIN_IMAGES), and a user whose own test
set (a fifth of the other writers) joins the reference.

About 6 minutes of CPU, most of it rendering 10,000 scans: 21 minutes of wall time at a load
of 10–17 on 2 cores (2026-12-01).
"""

import argparse
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tasks.calibrate import fit_calibration  # noqa: E402
from tasks.demo import FORMATS, encode, make_other_writers_folder, render_scan  # noqa: E402
from tasks.drift import (MIN_IMAGES, THRESHOLDS, drift_markdown, drift_report,  # noqa: E402
                         input_statistics, make_reference, psi, shares)
from tasks.images import preprocess  # noqa: E402

NAMES = list(THRESHOLDS)
SHORT = {"predicted_digit": "digit", "confidence": "conf", "review_rate": "review", "ink": "ink",
         "stroke_width": "stroke", "spread_aspect": "spread"}
ORDER_SEED = 0  # which test digits go in which batch


def scan_inputs(digits: np.ndarray, seed: int) -> tuple[np.ndarray, float, float]:
    """Each 28×28 uint8 digit as a scan file's bytes, read back as the model input; and the CPU
    seconds of rendering+encoding and of preprocessing."""
    rng = np.random.default_rng(seed)
    inputs, making, reading = [], 0.0, 0.0
    for i, d in enumerate(digits):
        t = time.process_time()
        data = encode(render_scan(d, rng), FORMATS[i % len(FORMATS)], rng)[1]
        making += time.process_time() - t
        inputs.append(preprocess(data))
        reading += time.process_time() - t
    return np.stack(inputs), making, reading - making


def png_inputs(digits: np.ndarray) -> np.ndarray:
    """Each digit as a plain 28×28 PNG through preprocess: the cheapest file path there is."""
    out = []
    for d in digits:
        buffer = io.BytesIO()
        Image.fromarray(d).save(buffer, "PNG")
        out.append(preprocess(buffer.getvalue()))
    return np.stack(out)


def bbox_aspect(x: np.ndarray) -> np.ndarray:
    """Width over height of the ink's (> 0.5) bounding box: the statistic not chosen."""
    mask = x > 0.5
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    height = 28 - rows[:, ::-1].argmax(axis=1) - rows.argmax(axis=1)
    width = 28 - cols[:, ::-1].argmax(axis=1) - cols.argmax(axis=1)
    return width / np.maximum(height, 1)


def decile_psi(reference: np.ndarray, values: np.ndarray) -> float:
    cuts = sorted({float(c) for c in np.quantile(reference, np.linspace(0.1, 0.9, 9))
                   if c > reference.min()})
    return psi(shares(reference, cuts), shares(values, cuts))


def header(extra: str = "") -> str:
    return f"{'batch':<14} " + " ".join(f"{SHORT[n]:>7}" for n in NAMES) + f" {extra:>7}"


def row(label: str, report: dict, extra: str = "") -> str:
    verdict = "ALARM " + ",".join(SHORT[n] for n in report["alarming"]) if report["alarm"] else "quiet"
    scores = " ".join(f"{report['scores'][n]:>7.3f}" for n in NAMES)
    return f"{label:<14} {scores} {extra:>7}  {verdict}"


def judge(variant: str, reference: dict, calibrate, threshold: float, scans: list, scan_prob: list,
          other: np.ndarray, other_prob: np.ndarray, size: int, raw_box: np.ndarray) -> None:
    """Every honest and other-writer batch against the reference, and the summary by target."""
    print(f"\n== {variant}: review below {threshold:.4f}; thresholds {THRESHOLDS}")
    print(header("bbox*"))
    honest, foreign = [], []
    for b, (x, p) in enumerate(zip(scans, scan_prob)):
        honest.append(drift_report(reference, calibrate(p), x, threshold))
        print(row(f"scans {b:02d}", honest[-1], f"{decile_psi(raw_box, bbox_aspect(x)):.3f}"))
    for b in range(len(other) // size):
        s = slice(b * size, (b + 1) * size)
        foreign.append(drift_report(reference, calibrate(other_prob[s]), other[s], threshold))
        print(row(f"other {b}", foreign[-1], f"{decile_psi(raw_box, bbox_aspect(other[s])):.3f}"))
    print("(bbox*: PSI of a bounding-box aspect over deciles of the test arrays; not used)")
    alarms, caught = sum(r["alarm"] for r in honest), sum(r["alarm"] for r in foreign)
    print(f"honest scan batches alarming: {alarms} of {len(honest)} (target ≤ 1 of 20: "
          f"{'met' if alarms <= max(1, len(honest) // 20) else 'MISSED'})")
    print(f"other-writer batches alarming: {caught} of {len(foreign)} (target: all: "
          f"{'met' if caught == len(foreign) else 'MISSED'})")
    print("per statistic, largest honest score / smallest other-writer score: " + ", ".join(
        f"{SHORT[n]} {max(r['scores'][n] for r in honest):.3f}/"
        f"{min(r['scores'][n] for r in foreign):.3f}" for n in NAMES))


def false_alarms_by_size(reference: dict, prob: np.ndarray, x: np.ndarray, threshold: float) -> None:
    """MIN_IMAGES: batches drawn from the reference's own pictures, no drift by construction."""
    rng = np.random.default_rng(1)
    print(f"\nBatches drawn from the reference's own pictures, 400 draws a size "
          f"(MIN_IMAGES = {MIN_IMAGES}): share that would alarm without the minimum")
    for n in (25, 50, 100, 150, 200, 300, 500):
        reports = [drift_report(reference, prob[i], x[i], threshold)
                   for i in (rng.choice(len(x), n, replace=False) for _ in range(400))]
        would = np.mean([any(r["scores"][k] > THRESHOLDS[k] for k in NAMES) for r in reports])
        highest = np.median([max(r["scores"].values()) for r in reports])
        print(f"  n = {n:>3}: {would:6.1%}; median of the highest score {highest:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    started = time.perf_counter()

    with np.load(REPO / "data" / "raw" / "mnist.npz", allow_pickle=False) as npz:
        x_train, y_train, x_test, y_test = (npz[n] for n in ("x_train", "y_train", "x_test", "y_test"))
    order = np.random.default_rng(ORDER_SEED).permutation(len(x_test))
    chunks = [order[b * args.size:(b + 1) * args.size] for b in range(args.batches)]
    if len(chunks[-1]) < args.size:
        raise SystemExit(f"{args.batches} batches of {args.size} need more than {len(x_test)} digits")
    # The slow part, forked before TensorFlow is imported, runs while the reference is made.
    pool = ProcessPoolExecutor(args.workers)
    rendering = [pool.submit(scan_inputs, x_test[c], seed) for seed, c in enumerate(chunks)]

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    model = keras.saving.load_model(args.model, compile=False)

    def predict(x: np.ndarray) -> np.ndarray:
        return model.predict(x, batch_size=1024, verbose=0)

    # Reference
    split = int(np.ceil(len(x_train) * 0.8))  # Keras's validation_split=0.2: the last rows
    val_prob = predict(x_train[split:] / np.float32(255))
    raw_test = x_test / np.float32(255)
    test_prob = predict(raw_test)
    calibration = fit_calibration(val_prob, y_train[split:])
    variants = {"calibrated": (calibration.probabilities, calibration.threshold),
                "p5": (lambda p: p, float(np.percentile(val_prob.max(axis=1), 5)))}
    t = time.perf_counter()
    references = {v: make_reference(f(test_prob), raw_test, thr) for v, (f, thr) in variants.items()}
    reference_ms = (time.perf_counter() - t) / len(variants) * 1000
    print(f"model {args.model}: MNIST test accuracy {np.mean(test_prob.argmax(1) == y_test):.4f}; "
          f"temperature {calibration.temperature:.3f}")
    for v, (_, thr) in variants.items():
        rate = references[v]["statistics"]["review_rate"]["proportions"][1]
        print(f"  {v}: review below {thr:.4f}, MNIST test review rate {rate:.2%}")
    print(f"make_reference on the 10,000 test arrays: {reference_ms:.0f} ms")

    # The cheapest file path, on 1,000 test digits
    sample = order[:1000]
    t = time.process_time()
    png = png_inputs(x_test[sample])
    png_ms = (time.process_time() - t) / len(sample) * 1000

    # Other writers
    with tempfile.TemporaryDirectory() as tmp:
        labels = make_other_writers_folder(Path(tmp))
        other = np.stack([preprocess((Path(tmp) / p).read_bytes()) for p in labels["path"]])
    other_prob = predict(other)

    # Honest scans
    t = time.perf_counter()
    rendered = [r.result() for r in rendering]
    pool.shutdown()
    scans = [x for x, _, _ in rendered]
    scan_prob = [predict(s) for s in scans]
    making_ms, reading_ms = (sum(r[k] for r in rendered) / (args.batches * args.size) * 1000
                             for k in (1, 2))
    print(f"{args.batches}×{args.size} scans rendered by {args.workers} workers "
          f"({time.perf_counter() - started:.0f} s since start, waited {time.perf_counter() - t:.0f} s)")

    print("\nInput statistics, mean: test arrays | 28×28 PNG → preprocess (same 1,000) | "
          "scans → preprocess | other writers")
    stats = [input_statistics(a) for a in (raw_test[sample], png, np.concatenate(scans), other)]
    for n in stats[0]:
        print(f"  {n:<14} " + " | ".join(f"{s[n].mean():.4f}" for s in stats))
    print(f"CPU per picture: 28×28 PNG → preprocess {png_ms:.1f} ms; scan render+encode "
          f"{making_ms:.1f} ms + preprocess {reading_ms:.1f} ms (10,000 test digits: "
          f"{png_ms * 10:.0f} s, and {(making_ms + reading_ms) * 10:.0f} s, of one core)")

    raw_box = bbox_aspect(raw_test)
    for v, (f, thr) in variants.items():
        judge(v, references[v], f, thr, scans, scan_prob, other, other_prob, args.size, raw_box)

    f, thr = variants["calibrated"]
    print("\nThe scoring report's table, honest batch 0 and other-writer batch 0 (calibrated):")
    for x, p in ((scans[0], scan_prob[0]), (other[:args.size], other_prob[:args.size])):
        print("\n".join(drift_markdown(drift_report(references["calibrated"], f(p), x, thr))))

    false_alarms_by_size(references["calibrated"], f(test_prob), raw_test, thr)

    # The alternative: a reference made from half the scan batches, scored on the other half.
    half = len(scans) // 2
    if half:
        from_scans = make_reference(f(np.concatenate(scan_prob[half:])), np.concatenate(scans[half:]), thr)
        print(f"\nMedian score of scan batches 0–{half - 1}: against a reference made from scan "
              f"batches {half}–{len(scans) - 1} | against the test arrays' reference")
        for n in NAMES:
            medians = [np.median([drift_report(r, f(p), x, thr)["scores"][n]
                                  for x, p in zip(scans[:half], scan_prob[:half])])
                       for r in (from_scans, references["calibrated"])]
            print(f"  {n:<16} {medians[0]:.3f} | {medians[1]:.3f}")

    # A user whose traffic is their own hand, a fifth of it in their test set.
    picked = np.random.default_rng(2).permutation(len(other))
    mine, rest = picked[:len(other) // 5], picked[len(other) // 5:][:args.size]
    joined = make_reference(f(np.concatenate([test_prob, other_prob[mine]])),
                            np.concatenate([raw_test, other[mine]]), thr)
    print(f"\nReference = MNIST test + {len(mine)} other-writer pictures (as a user's test set); "
          f"{len(rest)} other other-writer pictures against it:")
    print(header() + "\n" + row("other (user)", drift_report(joined, f(other_prob[rest]), other[rest], thr)))
    print(f"\nother writers' accuracy {np.mean(other_prob.argmax(1) == labels['label'].to_numpy()):.4f}; "
          f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
