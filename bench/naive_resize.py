"""Why preprocessing matters: accuracy on a labelled folder, naive resize vs digitflow's path.

    python bench/naive_resize.py [FOLDER] [--model PATH]

FOLDER (default data/demo) needs a labels.csv (path,label), as `digitflow demo-images` writes.
The naive path is what a tutorial user would do: grayscale, resize to 28×28, divide by 255.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.images import preprocess  # noqa: E402
from tasks.paths import get_paths  # noqa: E402
from tasks.modelfiles import resolve_model  # noqa: E402
from tasks.inference import load_scoring_model  # noqa: E402


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("folder", type=Path, nargs="?", default=Path("data/demo"))
    args.add_argument("--model", type=Path)
    options = args.parse_args()
    scoring = load_scoring_model(resolve_model(get_paths(), options.model))
    model, version = scoring.model, scoring.version
    labels = pd.read_csv(options.folder / "labels.csv")
    files = [options.folder / p for p in labels["path"]]
    naive = np.stack([np.asarray(Image.open(f).convert("L").resize((28, 28)), np.float32) / 255
                      for f in files])
    prepared = np.stack([preprocess(f.read_bytes()) for f in files])
    for name, x in (("naive resize", naive), ("digitflow preprocessing", prepared)):
        accuracy = (model.predict(x, verbose=0).argmax(axis=1) == labels["label"]).mean()
        print(f"{name:>24}: accuracy {accuracy:.4f} on {len(files)} images (model {version})")


if __name__ == "__main__":
    main()
