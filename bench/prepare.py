"""Preparing one image: digitflow's `read_image` against the careful scorer's, in one process.

    .venv/bin/python bench/prepare.py FOLDER [MODEL]

Times both on every image under FOLDER (one core, files already read once, twice each, the
faster pass counted), hashing included, and digitflow's decoding alone; then the same per kind of
file (format and Pillow mode), where the two differ most. With MODEL and the
folder's labels.csv (a folder from `digitflow demo-images`), also digitflow's accuracy and time
per image at smaller working sizes than its 160 pixels: the speed a smaller size would buy, and
what it would cost.
"""

import csv
import io
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from baseline_scorer import EXTENSIONS, centred  # noqa: E402
from tasks import images  # noqa: E402
from tasks.files import list_images, read_image  # noqa: E402
from tasks.store import file_sha256  # noqa: E402


def per_image_ms(prepare, items: list) -> float:
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        for item in items:
            try:
                prepare(item)
            except Exception:  # the baseline raises for a blank page; a row either way
                pass
        best = min(best, time.perf_counter() - started)
    return 1000 * best / len(items)


def accuracy_by_size(folder: Path, model_path: str) -> None:
    import keras

    labels = {row["path"]: int(row["label"]) for row in csv.DictReader(open(folder / "labels.csv"))}
    data = {path: (folder / path).read_bytes() for path in labels}
    model = keras.saving.load_model(model_path, compile=False)
    for size in (160, 128, 96):
        images.WORKING_SIZE = size
        inputs, started = {}, time.perf_counter()
        for path, blob in data.items():
            try:
                inputs[path] = images.preprocess(blob)
            except images.ImageError:
                pass
        ms = 1000 * (time.perf_counter() - started) / len(data)
        predicted = model.predict(np.stack(list(inputs.values())), verbose=0).argmax(axis=1)
        right = sum(int(p == labels[path]) for path, p in zip(inputs, predicted))
        print(f"working size {size}: {ms:.2f} ms per image, accuracy {right / len(data):.4f} "
              f"over {len(data)}")


def main() -> None:
    folder = Path(sys.argv[1])
    files = [f for f in list_images(folder) if Path(f.location).suffix.lower() in EXTENSIONS]
    paths = [Path(f.location) for f in files]
    baseline = per_image_ms(lambda p: (file_sha256(p), centred(p)), paths)
    digitflow = per_image_ms(read_image, files)
    blobs = [path.read_bytes() for path in paths]
    decoding = per_image_ms(images.decode, blobs)
    print(f"{len(files)} images: careful scorer {baseline:.2f} ms, digitflow {digitflow:.2f} ms "
          f"per image ({digitflow / baseline:.2f}×), of which decoding {decoding:.2f} ms")
    kinds = defaultdict(list)
    for file, path, blob in zip(files, paths, blobs):
        try:
            with Image.open(io.BytesIO(blob)) as image:
                kinds[f"{image.format} {image.mode}"].append((file, path, blob))
        except OSError:
            kinds["unreadable"].append((file, path, blob))
    for kind, members in sorted(kinds.items()):
        careful = per_image_ms(lambda m: (file_sha256(m[1]), centred(m[1])), members)
        ours = per_image_ms(lambda m: read_image(m[0]), members)
        decoded = per_image_ms(lambda m: images.decode(m[2]), members)
        print(f"  {kind:<12} {len(members):>6} files: careful {careful:.2f} ms, digitflow "
              f"{ours:.2f} ms ({ours / careful:.2f}×), of which decoding {decoded:.2f} ms")
    if len(sys.argv) > 2:
        accuracy_by_size(folder, sys.argv[2])


if __name__ == "__main__":
    main()
