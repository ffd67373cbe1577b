"""Listing a folder and sending reader results back: digitflow's way against the plain one.

    .venv/bin/python bench/listing.py FOLDER

FOLDER: a folder of images (bench/score.py's pngs-3x: 30,000 28×28 PNGs). Prints, best of 5,
µs per file for `list_images` against the `os.walk` listing it replaced (an lstat per file to
tell links apart), and µs per result for a reader batch's round trip through pickle, one array
per picture against `pack` (one array per batch of 250), and µs per file for reading a file's
bytes with `read_bytes` against `open().read()`.
"""

import os
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks.files import (  # noqa: E402
    EXTENSIONS, MAX_FILE_BYTES, OUTSIDE_LINK, ImageFile, display_name, list_images, pack, read_bytes,
    read_image, unpacked)


def walked(folder: Path) -> list[ImageFile]:
    """list_images as it was before os.scandir: os.walk, and islink on every file."""
    root, prefix = folder.resolve(), os.path.join(folder, "")

    def image(location: str, problem: str | None) -> ImageFile:
        return ImageFile(display_name(location[len(prefix):]), location, problem)

    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in list(dirnames):
            location = os.path.join(dirpath, name)
            if os.path.islink(location):
                dirnames.remove(name)
                if not Path(location).resolve().is_relative_to(root):
                    found.append(image(location, OUTSIDE_LINK))
        for name in filenames:
            location = os.path.join(dirpath, name)
            if os.path.splitext(name)[1].lower() not in EXTENSIONS:
                continue
            outside = os.path.islink(location) and not Path(location).resolve().is_relative_to(root)
            found.append(image(location, OUTSIDE_LINK if outside else None))
    return sorted(found, key=lambda f: f.path)


def best(work, count: int) -> float:
    """µs per item, the fastest of 5 runs."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times) / count * 1e6


def main() -> None:
    folder = Path(sys.argv[1])
    files = list_images(folder)
    assert walked(folder) == files  # the same list either way
    print(f"listing {len(files)} files: os.walk {best(lambda: walked(folder), len(files)):.1f} µs "
          f"per file, list_images {best(lambda: list_images(folder), len(files)):.1f}")
    locations = [f.location for f in files[:5000]]

    def opened():
        for location in locations:
            with open(location, "rb") as f:
                f.read(min(os.fstat(f.fileno()).st_size, MAX_FILE_BYTES) + 1)

    print(f"reading a file: open().read() {best(opened, len(locations)):.2f} µs, read_bytes "
          f"{best(lambda: [read_bytes(x, MAX_FILE_BYTES + 1) for x in locations], len(locations)):.2f}")
    read = [read_image(f) for f in files[:5000]]
    batches = [read[i:i + 250] for i in range(0, len(read), 250)]

    def per_picture():
        for batch in batches:
            pickle.loads(pickle.dumps(batch, protocol=5))

    def packed():
        for batch in batches:
            back = pickle.loads(pickle.dumps(pack(batch), protocol=5))
            [unpacked(back, place) for place in range(len(back[0]))]

    print(f"a result's round trip: one array per picture {best(per_picture, len(read)):.2f} µs, "
          f"packed {best(packed, len(read)):.2f} µs")


if __name__ == "__main__":
    main()
