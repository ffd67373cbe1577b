"""The other writers' folder: every optdigits digit as a picture the preprocessing can read."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.demo import make_other_writers_folder, render_other_writer
from tasks.images import preprocess

COUNT = 1797  # scikit-learn's load_digits


@pytest.fixture(scope="module")
def other_writers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("other-writers")
    return folder, make_other_writers_folder(folder, seed=0)


def pictures(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_digit_is_a_labelled_png(other_writers: tuple[Path, pd.DataFrame]) -> None:
    folder, labels = other_writers
    files = pictures(folder)
    assert len(files) == COUNT + 1  # and labels.csv
    assert len(labels) == COUNT and list(labels.columns) == ["path", "label"]
    assert set(labels["path"]) == set(files) - {"labels.csv"}
    assert pd.read_csv(folder / "labels.csv").equals(labels)
    assert sorted(labels["label"].unique()) == list(range(10))
    assert labels["label"].value_counts().min() >= 170  # optdigits is nearly balanced


def test_pictures_are_dark_ink_on_light_paper(other_writers: tuple[Path, pd.DataFrame]) -> None:
    folder, labels = other_writers
    sizes = set()
    for path in labels["path"][::50]:
        image = Image.open(folder / path)
        assert image.format == "PNG" and image.mode == "L"
        pixels = np.asarray(image)
        frame = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        assert np.median(frame) > 180 and pixels.min() < 110
        sizes.add(image.size[0])
    assert min(sizes) >= 48 and max(sizes) <= 128 and len(sizes) > 10


def test_the_folder_is_the_same_for_a_seed(other_writers: tuple[Path, pd.DataFrame],
                                           tmp_path: Path) -> None:
    folder, labels = other_writers
    again = make_other_writers_folder(tmp_path, seed=0)
    assert again.equals(labels)
    assert pictures(tmp_path) == pictures(folder)


def test_another_seed_draws_other_pictures() -> None:
    digit = np.tile(np.arange(8, dtype=np.float64) * 2, (8, 1))

    def png(seed: int) -> bytes:
        out = io.BytesIO()
        render_other_writer(digit, np.random.default_rng(seed)).save(out, "PNG")
        return out.getvalue()

    assert png(0) == png(0) and png(0) != png(1)


def test_every_picture_preprocesses_to_a_centred_white_digit(
        other_writers: tuple[Path, pd.DataFrame]) -> None:
    folder, labels = other_writers
    inputs = np.stack([preprocess((folder / path).read_bytes()) for path in labels["path"]])
    assert inputs.shape == (COUNT, 28, 28) and inputs.dtype == np.float32
    ys, xs = np.mgrid[:28, :28]
    mass = inputs.sum(axis=(1, 2))
    cy, cx = (inputs * ys).sum(axis=(1, 2)) / mass, (inputs * xs).sum(axis=(1, 2)) / mass
    assert np.abs(cy - 14).max() < 2 and np.abs(cx - 14).max() < 2
    # White on black: had the polarity been read wrong, the paper would fill the frame.
    border = np.ones((28, 28), dtype=bool)
    border[4:24, 4:24] = False
    centre = inputs[:, 8:20, 8:20].mean(axis=(1, 2))
    assert (centre > inputs[:, border].mean(axis=1) + 0.1).all()
