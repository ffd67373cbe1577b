"""How many times, and how, to repeat a span's pictures beside MNIST: the in-process experiment
behind tasks/yours.py's YOURS_SHARE and SHIFT (not the product's path: bench/adapt.py is that).

    .venv/bin/python bench/mix.py PRESET SEED NAME:V:TIMES …

The 300 other-writer labels of bench/adapt.py, split by SHA-256 as the product splits them (244
train); each variant trains PRESET with SEED on MNIST's fitting part plus your training pictures
TIMES times and prints other writers' and MNIST's test accuracy. V is "v" to hold the last fifth
of yours out to validate (in this script's order, sorted by digit: the fifth is mostly 9s), "n"
to fit all of them; a NAME starting with "aug" shifts each copy but the first by up to 2 px.
Example (docs/BENCHMARKS.md): `bench/mix.py seed 1 base:v:0 cur:v:28 all25:n:25 aug25:n:25`.
"""
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapt import split_labels  # noqa: E402
from tasks.demo import make_other_writers_folder
from tasks.images import preprocess
from tasks.labels import split_of
from tasks.yours import split_validation
from tasks.train import train_preset

folder = Path(tempfile.gettempdir()) / "digitflow-mix-other-writers"
labels = (pd.read_csv(folder / "labels.csv") if (folder / "labels.csv").exists()
          else make_other_writers_folder(folder))
span, rest = split_labels(labels)
def prep(df):
    xs, ys, shas = [], [], []
    for r in df.itertuples():
        data = (folder / r.path).read_bytes()
        xs.append(preprocess(data)); ys.append(r.label); shas.append(hashlib.sha256(data).hexdigest())
    return np.stack(xs), np.array(ys, np.uint8), shas
xs, ys, shas = prep(span); xr, yr, _ = prep(rest)
train_mask = np.array([split_of(s) == "train" for s in shas])
xt, yt = xs[train_mask], ys[train_mask]
print("your train", len(xt))
with np.load(Path(__file__).resolve().parents[1] / "data/raw/mnist.npz") as npz:
    mx, my = npz["x_train"] / np.float32(255), npz["y_train"]
    tx, ty = npz["x_test"] / np.float32(255), npz["y_test"]
(mfx, mfy), (mvx, mvy) = split_validation(mx, my, 0.2)
preset = sys.argv[1]; seed = int(sys.argv[2])
from tasks.presets import PRESETS
p = PRESETS[preset]
for name, use_val, times in [(a, b, int(c)) for a, b, c in (v.split(":") for v in sys.argv[3:])]:
    if use_val == "v":
        (fx, fy), (vx, vy) = split_validation(xt, yt, 0.2)
        val = (np.concatenate([mvx, vx]), np.concatenate([mvy, vy]))
    else:
        fx, fy = xt, yt; val = (mvx, mvy)
    if name.startswith("aug"):
        rng = np.random.default_rng(seed)
        def shifted(x):
            out = np.zeros_like(x)
            dy, dx = rng.integers(-2, 3, 2)
            ys, yd = (slice(0, 28 - dy), slice(dy, 28)) if dy >= 0 else (slice(-dy, 28), slice(0, 28 + dy))
            xs_, xd = (slice(0, 28 - dx), slice(dx, 28)) if dx >= 0 else (slice(-dx, 28), slice(0, 28 + dx))
            out[:, yd, xd] = x[:, ys, xs_]
            return out
        copies = [fx] + [shifted(fx) for _ in range(times - 1)]
        train = (np.concatenate([mfx] + copies), np.concatenate([mfy] + [fy] * times))
    else:
        train = (np.concatenate([mfx] + [fx] * times), np.concatenate([mfy] + [fy] * times))
    t = time.time()
    model, hist = train_preset(train, val, {"preset": preset, "epochs": p.epochs, "batch_size": p.batch_size, "validation_split": 0.2, "seed": seed, "speedups": True}, log=lambda m: None)
    acc_r = float((model.predict(xr, verbose=0, batch_size=1024).argmax(1) == yr).mean())
    acc_m = float((model.predict(tx, verbose=0, batch_size=1024).argmax(1) == ty).mean())
    print(f"{preset} seed {seed} {name}: fit {len(fx)}x{times} others {acc_r:.4f} mnist {acc_m:.4f} ({time.time()-t:.0f}s)", flush=True)
