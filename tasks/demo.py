"""A folder of scan-like digit images made from MNIST test digits, with their true labels.

Each digit is enlarged to pen-stroke size, rotated a little, put somewhere on a page of its own
size and colour with uneven lighting, sensor noise and blur, in either polarity, and saved in
one of the formats and modes a user's folder holds. The model has never seen these digits, and
the page looks nothing like MNIST until the preprocessing has done its work: scoring this
folder measures the whole path from file to label.

`make_other_writers_folder` writes real digits by other writers instead: scikit-learn's bundled
optdigits, which MNIST models read worse than MNIST, as a user's own handwriting would be.
"""

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from tasks.store import write_bytes

FORMATS = ("jpg", "png-gray", "png-rgba", "png-palette", "bmp", "tiff", "webp", "gif", "jpg-upper")


def render_scan(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One 28×28 uint8 MNIST digit as a grayscale photo or scan of a page."""
    scale = int(rng.integers(5, 13))
    big = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    big = big.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BICUBIC)
    stroke = np.clip((np.asarray(big, dtype=np.float32) / 255 - 0.3) * 2.5, 0, 1)
    h, w = stroke.shape
    page_h, page_w = int(h * rng.uniform(1.1, 2.5)), int(w * rng.uniform(1.1, 2.5))
    top, left = int(rng.integers(0, page_h - h + 1)), int(rng.integers(0, page_w - w + 1))
    layer = np.zeros((page_h, page_w), dtype=np.float32)
    layer[top:top + h, left:left + w] = stroke

    dark_on_light = rng.random() < 0.8
    paper, pen = (rng.uniform(190, 250), rng.uniform(10, 90)) if dark_on_light else \
        (rng.uniform(10, 60), rng.uniform(190, 250))
    ramp = np.linspace(-1, 1, page_w)[None, :] * rng.uniform(0, 25)  # light falling off sideways
    page = (paper + ramp) * (1 - layer) + pen * layer
    page += rng.normal(0, rng.uniform(2, 8), page.shape)
    image = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))


def encode(image: Image.Image, kind: str, rng: np.random.Generator) -> tuple[str, bytes]:
    """(extension, file bytes) for one of FORMATS."""
    out = io.BytesIO()
    if kind in ("jpg", "jpg-upper"):
        image.convert("RGB").save(out, "JPEG", quality=int(rng.integers(60, 95)))
        return ("JPG" if kind == "jpg-upper" else "jpg"), out.getvalue()
    if kind == "png-rgba":
        # Transparent paper: the alpha channel carries the stroke, as from a drawing app.
        gray = np.asarray(image, dtype=np.float32)
        paper = np.median(np.concatenate([gray[0], gray[-1]]))
        alpha = np.clip(np.abs(gray - paper) * 2.0, 0, 255).astype(np.uint8)
        color = np.full_like(alpha, 0 if paper > 127 else 255)
        Image.fromarray(np.dstack([color, color, color, alpha]), "RGBA").save(out, "PNG")
        return "png", out.getvalue()
    if kind == "png-palette":
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(out, "PNG")
        return "png", out.getvalue()
    fmt = {"png-gray": "PNG", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP", "gif": "GIF"}[kind]
    image.save(out, fmt)
    return {"png-gray": "png"}.get(kind, kind), out.getvalue()


def make_demo_folder(x: np.ndarray, y: np.ndarray, folder, count: int, seed: int = 0,
                     bad_files: bool = True) -> pd.DataFrame:
    """Write `count` scans of x[:count] under `folder` plus labels.csv; returns the labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        kind = FORMATS[i % len(FORMATS)]
        ext, data = encode(render_scan(x[i], rng), kind, rng)
        path = f"batch-{i // 100:02d}/scan-{i:05d}.{ext}"
        write_bytes(folder / path, data)
        rows.append({"path": path, "label": int(y[i])})
    if bad_files:
        # What real folders hold too: each of these becomes an error row, not a crash.
        write_bytes(folder / "broken/truncated.png", _truncated_png(x[0]))
        write_bytes(folder / "broken/notes.jpg", b"this is a text file with an image's name\n")
        write_bytes(folder / "broken/empty.png", b"")
        write_bytes(folder / "README.txt", b"not an image extension: ignored by the scorer\n")
    labels = pd.DataFrame(rows)
    write_bytes(folder / "labels.csv", labels.to_csv(index=False).encode())
    return labels


def _truncated_png(digit: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(digit).resize((280, 280)).save(out, "PNG")
    return out.getvalue()[: len(out.getvalue()) // 2]


def render_other_writer(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One 8×8 optdigits digit (0–16) as a grayscale picture of dark ink on light paper."""
    size = int(rng.integers(48, 129))
    # The 8×8 grid is the digit's bounding box; a picture has paper around it, about as much as
    # make_demo_folder's pages. (Tighter crops of fat strokes lose ink to images.background.)
    side = int(round(size * rng.uniform(0.45, 0.65)))
    stroke = Image.fromarray(digit.astype(np.float32) / 16).resize((side, side), Image.Resampling.BICUBIC)
    top, left = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    layer = np.zeros((size, size), dtype=np.float32)
    layer[top:top + side, left:left + side] = np.clip(np.asarray(stroke), 0, 1)  # bicubic overshoots
    paper, pen = rng.uniform(200, 250), rng.uniform(10, 70)
    page = paper * (1 - layer) + pen * layer + rng.normal(0, rng.uniform(1, 4), layer.shape)
    return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))


def make_other_writers_folder(folder: Path, seed: int = 0) -> pd.DataFrame:
    """Write scikit-learn's 1,797 optdigits (43 writers, none of them MNIST's) as grayscale PNGs
    under `folder` plus labels.csv; returns the labels (path, label)."""
    from sklearn.datasets import load_digits  # slow to import; bundled data, no download

    digits = load_digits()
    rng = np.random.default_rng(seed)
    rows = []
    for i, (digit, label) in enumerate(zip(digits.images, digits.target)):
        out = io.BytesIO()
        render_other_writer(digit, rng).save(out, "PNG")
        path = f"batch-{i // 100:02d}/digit-{i:04d}.png"
        write_bytes(folder / path, out.getvalue())
        rows.append({"path": path, "label": int(label)})
    labels = pd.DataFrame(rows)
    write_bytes(folder / "labels.csv", labels.to_csv(index=False).encode())
    return labels
