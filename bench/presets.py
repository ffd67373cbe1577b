"""Each preset's test accuracy and training time, median of three seeds.

    .venv/bin/python bench/presets.py [--seeds 1 2 3] [--presets seed tuned cnn]

Trains in this process with the same code the flow runs (tasks.train.train_preset) on the
verified MNIST, all 60,000 training images, and evaluates on the 10,000 test images.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks.normalize import normalize_images  # noqa: E402
from tasks.presets import PRESETS  # noqa: E402
from tasks.settings import TrainSettings  # noqa: E402
from tasks.train import train_preset  # noqa: E402


def main() -> None:
    options = argparse.ArgumentParser()
    options.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    options.add_argument("--presets", nargs="+", default=list(PRESETS))
    args = options.parse_args()
    with np.load(Path(__file__).resolve().parents[1] / "data" / "raw" / "mnist.npz",
                 allow_pickle=False) as npz:
        x, y = normalize_images(npz["x_train"]), npz["y_train"]
        x_test, y_test = normalize_images(npz["x_test"]), npz["y_test"]
    print(f"{'preset':<8}{'seed':>6}{'epochs':>8}{'fit s':>8}{'test acc':>10}", flush=True)
    for name in args.presets:
        runs = []
        for seed in args.seeds:
            settings = TrainSettings(preset=name, seed=seed).fit_settings()
            started = time.perf_counter()
            model, history = train_preset(x, y, settings, log=lambda _: None)
            seconds = time.perf_counter() - started
            accuracy = float((model.predict(x_test, batch_size=2048, verbose=0).argmax(1) == y_test).mean())
            runs.append((seconds, accuracy))
            print(f"{name:<8}{seed:>6}{len(history):>8}{seconds:>8.1f}{accuracy:>10.4f}", flush=True)
        print(f"{name:<8}{'median':>6}{'':>8}{statistics.median(s for s, _ in runs):>8.1f}"
              f"{statistics.median(a for _, a in runs):>10.4f}", flush=True)


if __name__ == "__main__":
    main()
