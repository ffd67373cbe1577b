"""Scoring: `digitflow score` against a careful single-process scorer and the tutorial's loop.

    .venv/bin/python bench/score.py [--images 10000] [--scans 2000]

Makes its inputs from the verified MNIST test set: (a) 28×28 PNGs, (b) a folder of scan-like
pictures in mixed formats and sizes (tasks/demo.py). Every scorer runs as its own process from
start to finish, so everything counts: imports, Prefect, decoding, hashing, Parquet. Also
measures peak memory for 5,000 against 50,000 images.
"""

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from common import BIN, REPO, bench_root, digitflow_env, run

sys.path.insert(0, str(REPO))
from tasks.demo import make_demo_folder  # noqa: E402
from tasks.store import write_bytes  # noqa: E402


def png_folder(folder: Path, x: np.ndarray, count: int) -> Path:
    for i in range(count):
        out = io.BytesIO()
        Image.fromarray(x[i % len(x)]).save(out, "PNG")
        write_bytes(folder / f"{i // 1000:03d}" / f"{i:06d}.png", out.getvalue())
    return folder


def score_all(root: Path, folder: Path, model: str, count: int) -> dict:
    env = digitflow_env(root)
    baseline = run([sys.executable, str(REPO / "bench" / "baseline_scorer.py"), str(folder), model,
                    str(root / "baseline.parquet")])
    ours = run([str(BIN / "digitflow"), "score", str(folder), "--model", model,
                "--output", str(root / "digitflow.parquet")], env, cwd=root)
    return {"baseline": baseline, "digitflow": ours, "count": count}


def report(name: str, r: dict) -> None:
    n = r["count"]
    b, d = r["baseline"]["wall"], r["digitflow"]["wall"]
    print(f"{name}: {n} images")
    print(f"  careful single-process scorer {b:7.1f} s  {n / b:8.0f} images/s")
    print(f"  digitflow score               {d:7.1f} s  {n / d:8.0f} images/s  "
          f"(ratio {b / d:.2f}, target >= 1.5)")


def main() -> None:
    options = argparse.ArgumentParser()
    options.add_argument("--images", type=int, default=10_000)
    options.add_argument("--scans", type=int, default=2_000)
    args = options.parse_args()
    root = bench_root()
    env = digitflow_env(root)
    with np.load(root / "data" / "raw" / "mnist.npz") as npz:
        x, y = npz["x_test"], npz["y_test"]
    run([str(BIN / "digitflow"), "train", "--limit", "10000", "--epochs", "2"], env, cwd=root)
    model = str(root / "artifacts" / "models" / "latest.json")
    import json

    model = json.loads(Path(model).read_text())["model_path"]

    pngs = png_folder(root / "pngs", x, args.images)
    report("(a) 28×28 PNGs", score_all(root, pngs, model, args.images))
    scans = root / "scans"
    make_demo_folder(x, y, scans, count=args.scans, bad_files=False)
    report("(b) scan-like pictures, mixed formats", score_all(root, scans, model, args.scans))

    small = png_folder(root / "loop", x, 300)
    loop = run([sys.executable, str(REPO / "bench" / "baseline_scorer.py"), str(small), model,
                str(root / "loop.parquet"), "--one-at-a-time"])
    print(f"one predict per image (tutorial's way): {300 / loop['wall']:.0f} images/s over 300")

    memory = {}
    for count in (5_000, 50_000):
        folder = png_folder(root / f"mem-{count}", x, count)
        memory[count] = run([str(BIN / "digitflow"), "score", str(folder), "--model", model,
                             "--output", str(root / f"mem-{count}.parquet")], env, cwd=root)
    print(f"peak RSS: 5,000 images {memory[5_000]['rss_mib']:.0f} MiB, 50,000 images "
          f"{memory[50_000]['rss_mib']:.0f} MiB (ratio {memory[50_000]['rss_mib'] / memory[5_000]['rss_mib']:.2f}, "
          f"target <= 1.2)")
    print(f"bench root: {root}")


if __name__ == "__main__":
    main()
