"""The careful single-process scorer that `digitflow score` is measured against.

    python bench/baseline_scorer.py FOLDER MODEL OUTPUT [--one-at-a-time]

What a competent user writes without digitflow: decode with Pillow, MNIST-style centring (ink
white on black, crop to the ink, fit into 20×20 keeping the aspect ratio, centre of mass at the
centre of 28×28), one batched `predict`, a Parquet table. `--one-at-a-time` calls `predict` per
image, as the tutorial's last step does. Prints one line of JSON.
"""

import hashlib
import json
import sys
import time
from pathlib import Path

started = time.perf_counter()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage  # noqa: E402

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


def centred(path: Path) -> np.ndarray:
    gray = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255
    if np.median(np.concatenate([gray[0], gray[-1]])) > 0.5:
        gray = 1 - gray
    rows, cols = np.flatnonzero(gray.max(axis=1) > 0.3), np.flatnonzero(gray.max(axis=0) > 0.3)
    crop = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = 20 / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
    cy, cx = ndimage.center_of_mass(small)
    top = min(max(int(round(14 - cy)), 0), 28 - small.shape[0])
    left = min(max(int(round(14 - cx)), 0), 28 - small.shape[1])
    canvas = np.zeros((28, 28), dtype=np.float32)
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return canvas


def main() -> None:
    work_started = time.perf_counter()  # the job itself: after Python and the imports
    folder, model_path, output = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    one_at_a_time = "--one-at-a-time" in sys.argv
    model = keras.saving.load_model(model_path, compile=False)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS)
    rows, inputs = [], []
    for path in files:
        data = path.read_bytes()
        try:
            x = centred(path)
        except Exception as exc:
            rows.append({"path": str(path.relative_to(folder)), "sha256": hashlib.sha256(data).hexdigest(),
                         "error": str(exc)})
            continue
        rows.append({"path": str(path.relative_to(folder)), "sha256": hashlib.sha256(data).hexdigest(),
                     "error": None})
        inputs.append(x)
    if one_at_a_time:
        probs = np.concatenate([model.predict(x.reshape(1, 28, 28), verbose=0) for x in inputs])
    else:
        probs = model.predict(np.stack(inputs), batch_size=1024, verbose=0)
    ok = [r for r in rows if r["error"] is None]
    for row, p in zip(ok, probs):
        row["label"], row["confidence"] = int(p.argmax()), float(p.max())
    pd.DataFrame(rows).to_parquet(output, index=False)
    print(json.dumps({"scored": len(ok), "errors": len(rows) - len(ok),
                      "seconds": round(time.perf_counter() - started, 2),
                      "work_seconds": round(time.perf_counter() - work_started, 2)}))


if __name__ == "__main__":
    main()
