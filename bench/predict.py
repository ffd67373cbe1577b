"""`digitflow predict one.png`, cold, whole process: wall time and peak memory for each preset.

    .venv/bin/python bench/predict.py [--repeat 5] [--root ROOT]

In a fresh root, trains one model of each preset briefly (`--limit 2000 --epochs 1`: the
network's shape decides the cost of an answer, not its weights), then runs `digitflow predict`
on one scanned-looking picture (a test digit, enlarged to 200×200, dark on light) `--repeat`
times per model, each a new process. `--root` uses that root's models instead: each preset's
latest version there. Beside the figures, their floors measured in the same run: Python alone,
and the imports predict cannot do without (numpy, Pillow, scipy.ndimage, onnxruntime).
Targets (issue #14): ≤ 1.0 s wall and ≤ 200 MB peak RSS. Takes about 3 minutes.
"""

import argparse
import io
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from common import BIN, REPO, bench_root, digitflow_env, run

sys.path.insert(0, str(REPO))
from tasks.presets import PRESETS  # noqa: E402

TARGET_WALL, TARGET_MB = 1.0, 200
QUICK = ["--limit", "2000", "--epochs", "1"]
# Each floor leaves as `digitflow` does (flows.cli.run): os._exit, without the interpreter's teardown.
FLOORS = {name: f"{code}; import os; os._exit(0)" for name, code in (
    ("python", "pass"), ("needed imports", "import numpy, PIL.Image, scipy.ndimage, onnxruntime"),
    ("keras (before #14)", "import keras"))}


def picture(root: Path) -> Path:
    with np.load(REPO / "data" / "raw" / "mnist.npz") as npz:
        digit = npz["x_test"][0]
    out = io.BytesIO()
    Image.fromarray(255 - digit).resize((200, 200), Image.BILINEAR).save(out, "PNG")
    path = root / "one.png"
    path.write_bytes(out.getvalue())
    return path


def models_by_preset(root: Path) -> dict[str, Path]:
    """Each preset's latest model folder in the root."""
    found = {}
    for meta in sorted((root / "artifacts" / "models").glob("*/metadata.json"),
                       key=lambda m: json.loads(m.read_text())["created_at"]):
        preset = json.loads(meta.read_text())["preset"]
        if preset in PRESETS:
            found[preset] = meta.parent
    return found


def timed(cmd: list[str], env: dict, cwd: Path, repeat: int) -> dict:
    runs = [run(cmd, env, cwd) for _ in range(repeat)]
    return {"wall": statistics.median(r["wall"] for r in runs),
            "rss_mb": max(r["rss_mib"] for r in runs) * 2**20 / 1e6}


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--repeat", type=int, default=5)
    options.add_argument("--root", type=Path, help="use this root's models instead of training")
    args = options.parse_args()
    root = args.root or bench_root()
    env = digitflow_env(root)
    if args.root is None:
        for preset in PRESETS:
            run([str(BIN / "digitflow"), "train", "--preset", preset, *QUICK], env, cwd=root)
    models = models_by_preset(root)
    one = picture(root)

    floors = {name: timed([str(BIN / "python"), "-c", code], env, root, args.repeat)
              for name, code in FLOORS.items()}
    print(f"cold `digitflow predict one.png`, median of {args.repeat} (wall) and the most (peak "
          f"RSS) — targets ≤ {TARGET_WALL} s, ≤ {TARGET_MB} MB")
    for name, figures in floors.items():
        print(f"  floor  {name:<20} {figures['wall']:5.2f} s  {figures['rss_mb']:5.0f} MB")
    for preset, folder in models.items():
        figures = timed([str(BIN / "digitflow"), "predict", str(one), "--json", "--model", str(folder)],
                        env, root, args.repeat)
        met = figures["wall"] <= TARGET_WALL and figures["rss_mb"] <= TARGET_MB
        print(f"  {preset:<6} {folder.name}  {figures['wall']:5.2f} s  {figures['rss_mb']:5.0f} MB"
              f"  {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
