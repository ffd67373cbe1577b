"""Calibration and the review flag (#13): each preset's ECE before and after temperature scaling,
and what the review flag does on scan-like digits and on other writers' digits.

    .venv/bin/python bench/calibration.py [--presets seed tuned cnn] [--seeds 1] [--scans 2000]
                                          [--scan-validation N] [--model PRESET=path.keras …]
                                          [--out DIR]

For each preset and seed: train in this process with the flow's code (tasks.train.train_preset)
on MNIST's 60,000 training images split as the flow splits them (the last 20 % validate), or load
the model given by `--model PRESET=path.keras`; predict the validation split and fit the
temperature and the review threshold on it (tasks.calibrate.calibration_record); then measure on

- MNIST's 10,000 test images: ECE before and after (target ≤ 0.01, every preset);
- scan-like pictures of the first `--scans` MNIST test digits, made in-process as
  `digitflow demo-images` makes them (tasks.demo.render_scan, encode) and prepared as scoring
  prepares them (tasks.images.preprocess): flagged share and accepted accuracy (targets for the
  cnn preset, the champion: ≤ 5 % flagged, ≥ 0.997 of the accepted correct);
- scikit-learn's 1,797 optdigits as pictures (tasks.demo.make_other_writers_folder): the share
  of the errors the flag catches (target ≥ 60 %).

Prints a markdown table per preset with every figure beside its target. With
`--scan-validation N`, also fits T and the threshold on scan-like pictures of the first N
validation digits (other pages than the test pictures'), and on both validation sets together,
each at max_error 0.005, 0.003 and 0.002, and prints what each choice gives on the test sets.

Writes each model, its predictions (predictions-<preset>-<seed>.npz: prob and y per set, to study
other choices without predicting again), the calibration record (JSON), the reliability diagram
(PNG) and the prepared scan-like pictures under --out; a second run with the same --out reuses
the pictures, and `--model` the models.
Training takes about 1 minute (seed, tuned) and 4 minutes (cnn) on an idle 2-core machine; the
scan-like pictures about 20 ms each.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks.calibrate import (BINS, calibrated, calibration_record, fit_calibration,  # noqa: E402
                             set_figures)
from tasks.demo import FORMATS, encode, make_other_writers_folder, render_scan  # noqa: E402
from tasks.images import ImageError, preprocess  # noqa: E402
from tasks.metrics import reliability_bins  # noqa: E402
from tasks.normalize import normalize_images  # noqa: E402
from tasks.settings import TrainSettings  # noqa: E402
from tasks.yours import split_validation  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCAN_SEED = 0  # the demo folder's seed: the same kind of pages
CHUNK = 250  # scan-like pictures per worker task
PREDICT_BATCH = 1024
TARGETS = {"ece": 0.01, "review_rate": 0.05, "accepted_accuracy": 0.997, "errors_flagged": 0.60}


def scan_chunk(digits: np.ndarray, first: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    """Model inputs of scan-like pictures of `digits` (index first, first+1, …); the indices
    that preprocessing refused are left out. Each chunk has its own RNG: the same pictures
    whatever the number of workers."""
    rng = np.random.default_rng([seed, first])
    inputs, kept = [], []
    for i, digit in enumerate(digits):
        _, data = encode(render_scan(digit, rng), FORMATS[(first + i) % len(FORMATS)], rng)
        try:
            inputs.append(preprocess(data))
            kept.append(first + i)
        except ImageError:
            pass
    return inputs, kept


def scan_like(x: np.ndarray, y: np.ndarray, count: int, seed: int,
              cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) of scan-like pictures of the first `count` digits of x, on every core;
    kept in `cache` (an .npz) for the next run with the same --out."""
    if cache.exists():
        with np.load(cache, allow_pickle=False) as npz:
            return npz["x"], npz["y"]
    starts = range(0, count, CHUNK)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        parts = list(pool.map(scan_chunk, [x[s:min(s + CHUNK, count)] for s in starts], starts,
                              [seed] * len(starts)))
    inputs = np.stack([a for part, _ in parts for a in part])
    labels = y[[i for _, part in parts for i in part]]
    np.savez(cache, x=inputs, y=labels)
    return inputs, labels


def other_writers(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    labels = make_other_writers_folder(folder, seed=0)
    inputs = [preprocess((folder / path).read_bytes()) for path in labels["path"]]
    return np.stack(inputs), labels["label"].to_numpy()


def predict(model, x: np.ndarray) -> np.ndarray:
    # predict_on_batch as tasks.score does: the same numbers, without `predict`'s set-up
    return np.concatenate([model.predict_on_batch(x[i:i + PREDICT_BATCH])
                           for i in range(0, len(x), PREDICT_BATCH)])


def get_model(preset: str, seed: int, given: dict[str, Path], data: dict, out: Path):
    """(model, seconds, where it came from): the given file, or trained now and saved under out."""
    import keras

    from tasks.train import train_preset

    started = time.perf_counter()
    if preset in given:
        model = keras.saving.load_model(given[preset], compile=False, safe_mode=True)
        return model, time.perf_counter() - started, f"loaded {given[preset]}"
    fit_settings = TrainSettings(preset=preset, seed=seed).fit_settings()
    model, history = train_preset(data["train"], data["validation"], fit_settings, log=lambda _: None)
    seconds = time.perf_counter() - started
    path = out / f"{preset}-seed{seed}.keras"
    model.save(path)
    return model, seconds, f"trained in {seconds:.0f} s ({len(history)} epochs), saved {path}"


def met(value: float | None, target: float, at_most: bool) -> str:
    if value is None:
        return "—"
    ok = value <= target if at_most else value >= target
    return "yes" if ok else f"**no** (by {abs(value - target):.4f})"


def table(record: dict) -> str:
    v, t = record["validation"], record["tests"]
    rows = [("temperature T", f"{record['temperature']:.4f}", "", ""),
            ("review threshold (calibrated confidence)", f"{record['threshold']:.4f}", "", ""),
            (f"validation ({v['images']}): accuracy, flagged, accepted accuracy",
             f"{v['accuracy']:.4f}, {v['review_rate']:.2%}, {v['accepted_accuracy']:.4f}",
             f"accepted ≥ {1 - record['max_error']:.3f}", "")]
    for name, figures in t.items():
        f = figures
        rows += [(f"{name} ({f['images']}): accuracy", f"{f['accuracy']:.4f}", "", ""),
                 (f"{name}: ECE before → after",
                  f"{f['ece_before']:.4f} → {f['ece_after']:.4f}",
                  "≤ 0.01" if name == "mnist" else "",
                  met(f["ece_after"], TARGETS["ece"], True) if name == "mnist" else "")]
        flagged = f"{f['review_rate']:.2%}"
        accepted = "—" if f["accepted_accuracy"] is None else f"{f['accepted_accuracy']:.4f}"
        caught = "—" if f["errors_flagged"] is None else f"{f['errors_flagged']:.2%}"
        if name == "scans":
            rows += [(f"{name}: flagged", flagged, "≤ 5 % (cnn)", met(f["review_rate"], 0.05, True)),
                     (f"{name}: accepted accuracy", accepted, "≥ 0.997 (cnn)",
                      met(f["accepted_accuracy"], 0.997, False)),
                     (f"{name}: errors flagged", caught, "", "")]
        elif name == "other writers":
            rows += [(f"{name}: flagged", flagged, "", ""),
                     (f"{name}: accepted accuracy", accepted, "", ""),
                     (f"{name}: errors flagged", caught, "≥ 60 %",
                      met(f["errors_flagged"], 0.60, False))]
        else:
            rows += [(f"{name}: flagged, accepted accuracy, errors flagged",
                      f"{flagged}, {accepted}, {caught}", "", "")]
    lines = ["| figure | value | target | met? |", "|---|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows])


def reliability_png(record: dict, sets: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    from tasks.plots import png_bytes, reliability_figure

    t = record["temperature"]
    bins = {name: (reliability_bins(prob, y, BINS), reliability_bins(calibrated(prob, t), y, BINS))
            for name, (prob, y) in sets.items()}
    path.write_bytes(png_bytes(reliability_figure(bins)))


def alternatives(fits: dict[str, tuple[np.ndarray, np.ndarray]],
                 tests: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """Other choices of what T and the threshold are fitted on, and of max_error, side by side."""
    lines = ["| fitted on | max_error | T | threshold | MNIST ECE after | scans ECE after "
             "| scans flagged | scans accepted | other writers flagged | other errors flagged |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, (prob, y) in fits.items():
        for max_error in (0.005, 0.003, 0.002):
            c = fit_calibration(prob, y, max_error)
            m, sc, o = (set_figures(c, *tests[k]) for k in ("mnist", "scans", "other writers"))
            lines.append(f"| {name} ({len(y)}) | {max_error} | {c.temperature:.3f} "
                         f"| {c.threshold:.4f} | {m['ece_after']:.4f} | {sc['ece_after']:.4f} "
                         f"| {sc['review_rate']:.2%} | {sc['accepted_accuracy']:.4f} "
                         f"| {o['review_rate']:.2%} | {o['errors_flagged']:.2%} |")
    return "\n".join(lines)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--presets", nargs="+", default=["seed", "tuned", "cnn"])
    options.add_argument("--seeds", type=int, nargs="+", default=[1])
    options.add_argument("--scans", type=int, default=2000, help="scan-like test digits (≤ 10000)")
    options.add_argument("--scan-validation", type=int, default=0, metavar="N",
                         help="also fit on scan-like pictures of the first N validation digits "
                              "and compare (≤ 12000)")
    options.add_argument("--model", nargs="*", default=[], metavar="PRESET=PATH",
                         help="use this trained .keras file for the preset instead of training")
    options.add_argument("--out", type=Path, default=None, help="where models, records, PNGs go")
    args = options.parse_args()
    given = {k: Path(v) for k, v in (item.split("=", 1) for item in args.model)}
    out = args.out or Path(tempfile.mkdtemp(prefix="digitflow-calibration-"))
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    with np.load(REPO / "data" / "raw" / "mnist.npz", allow_pickle=False) as npz:
        x_raw_test, y_test = npz["x_test"], npz["y_test"]
        x_raw_train, y_train = npz["x_train"], npz["y_train"]
    train, validation = split_validation(normalize_images(x_raw_train), y_train, 0.2)
    data = {"train": train, "validation": validation}
    scans = scan_like(x_raw_test, y_test, args.scans, SCAN_SEED, out / f"scans-test-{args.scans}.npz")
    print(f"scan-like test digits: {len(scans[1])} of the first {args.scans} prepared "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    fits = {"MNIST validation": validation}
    if args.scan_validation:
        raw_validation = split_validation(x_raw_train, y_train, 0.2)[1]
        fits["scan-like validation"] = scan_like(
            *raw_validation, args.scan_validation, SCAN_SEED + 1,
            out / f"scans-validation-{args.scan_validation}.npz")
        print(f"scan-like validation digits: {len(fits['scan-like validation'][1])} prepared "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    others = other_writers(out / "other-writers")
    print(f"other writers: {len(others[1])} optdigits pictures prepared", flush=True)
    sets = {"mnist": (normalize_images(x_raw_test), y_test), "scans": scans, "other writers": others}

    for preset in args.presets:
        for seed in args.seeds:
            model, seconds, origin = get_model(preset, seed, given, data, out)
            probs = {name: predict(model, x) for name, (x, _) in [*fits.items(), *sets.items()]}
            labels = {name: y for name, (_, y) in [*fits.items(), *sets.items()]}
            np.savez(out / f"predictions-{preset}-{seed}.npz",
                     **{f"{name}_prob": p for name, p in probs.items()},
                     **{f"{name}_y": y for name, y in labels.items()})
            tests = {name: (probs[name], labels[name]) for name in sets}
            record = calibration_record(probs["MNIST validation"], validation[1], tests)
            (out / f"calibration-{preset}-{seed}.json").write_text(json.dumps(record, indent=1))
            reliability_png(record, tests, out / f"reliability-{preset}-{seed}.png")
            print(f"\n### {preset} preset, seed {seed} ({origin})\n\n{table(record)}", flush=True)
            if args.scan_validation:
                fitted = {name: (probs[name], labels[name]) for name in fits}
                fitted["both"] = tuple(np.concatenate(pair) for pair in zip(*fitted.values()))
                print(f"\nWhat T and the threshold are fitted on:\n\n{alternatives(fitted, tests)}",
                      flush=True)
    print(f"\nwritten under {out} ({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
