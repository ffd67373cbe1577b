"""Any image file → the 28×28 input an MNIST model expects, made the way MNIST itself was made.

Composite transparency onto paper, grayscale, make the ink white on black whatever the polarity,
flatten uneven lighting, crop to the ink, fit it into 20×20 keeping its aspect ratio, and place
it in 28×28 so that its centre of mass is the centre. A plain resize of a photo or scan to 28×28
gives the model something it has never seen; this gives it a digit.
"""

import io
import math
import threading

import imagecodecs
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pywuffs import ImageDecoderQuirks, PixelFormat
from pywuffs import aux as wuffs
from scipy import ndimage

WORKING_SIZE = 160  # pictures are reduced to this before looking for the digit (20 px)
BOX, CANVAS = 20, 28  # MNIST: the digit fits a 20×20 box centred in 28×28
MIN_CONTRAST = 0.12  # below this the page is taken as blank
STROKE_FRACTION = 0.1  # MNIST strokes are about a tenth of the digit's height
ORIENTATION = 0x0112  # the EXIF tag that says how a photo was held
SMALL = 64  # up to this size an image is a cut-out digit, not a photo: no lighting to flatten
# ndimage.gaussian_filter(·, 1)'s weights (radius 4), made once: blur() is that filter without
# the 13 µs a call of remaking them (timed on a 9 × 9 array)
GAUSSIAN = np.exp(-0.5 * np.arange(-4, 5) ** 2)
GAUSSIAN /= GAUSSIAN.sum()
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # pieces of ink touching at a corner are one piece


class ImageError(ValueError):
    """A file that cannot be scored, with a reason a person can act on."""


def decode(data: bytes) -> Image.Image:
    """The first frame of an image file, upright per its EXIF orientation, fully loaded."""
    picture = decode_pixels(data)
    return Image.fromarray(picture) if isinstance(picture, np.ndarray) else picture


def decode_pixels(data: bytes) -> Image.Image | np.ndarray:
    """decode(), except that an 8-bit gray picture may come back as the uint8 array its decoder
    gave: making that an Image and back takes about a fifth of preparing a 28×28 PNG."""
    if not data:
        raise ImageError("empty file")
    if (pixels := simple_webp(data)) is not None:
        return Image.fromarray(pixels, "RGB")
    try:
        image = Image.open(io.BytesIO(data))
        # Pillow only warns between its pixel limit and twice that, and a warnings filter is not
        # thread-safe: checked here, before any pixel is decoded.
        if over_pixel_limit(image.width, image.height):
            raise Image.DecompressionBombError(f"{image.width}×{image.height} pixels is over "
                                               f"Pillow's limit of {Image.MAX_IMAGE_PIXELS}")
        image.seek(0)
        if image.format == "JPEG":  # decode at a reduced scale where JPEG allows it
            image.draft(image.mode, (WORKING_SIZE, WORKING_SIZE))
        elif (decoded := fast_decode(image, data)) is not None:
            return decoded
        if image.getexif().get(ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        if is_heif(data):
            raise ImageError("a HEIF/HEIC photo (an iPhone's usual format), which Pillow cannot "
                             "decode: convert it to JPEG or PNG, e.g. `heif-convert IN.heic "
                             "OUT.jpg`, or set the phone to take JPEGs") from exc
        raise ImageError("not an image Pillow can read (unknown or corrupt format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"truncated or damaged image: {exc}") from exc
    return image


def over_pixel_limit(width: int, height: int) -> bool:
    """Whether a picture has more pixels than Pillow's limit (Image.MAX_IMAGE_PIXELS; None: none)."""
    return bool(Image.MAX_IMAGE_PIXELS) and width * height > Image.MAX_IMAGE_PIXELS


HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


def is_heif(data: bytes) -> bool:
    """An ISO media file whose brands say HEIF and not AVIF (which Pillow reads)."""
    if data[4:8] != b"ftyp" or data[8:12] not in HEIF_BRANDS:
        return False
    box = data[16:int.from_bytes(data[:4], "big")]  # the compatible brands
    return not any(box[i:i + 4] in (b"avif", b"avis") for i in range(0, len(box), 4))


def wuffs_decoder() -> wuffs.ImageDecoder:
    """Wuffs's PNG and GIF decoders, to RGBA. PNG checksums are checked, as Pillow checks them:
    Wuffs skips them by default, and then gives pixels for damaged files that Pillow refuses."""
    config = wuffs.ImageDecoderConfig()
    config.pixel_format = PixelFormat.RGBA_NONPREMUL
    config.quirks = {ImageDecoderQuirks.IGNORE_CHECKSUM: 0}
    return wuffs.ImageDecoder(config)


THREAD = threading.local()


def wuffs_decode(data: bytes) -> wuffs.ImageDecodingResult:
    """data decoded by this thread's own Wuffs decoder: one releases the GIL while it decodes
    and keeps its result in itself, so threads sharing one crash (readers in a Prefect task)."""
    if (decoder := getattr(THREAD, "wuffs", None)) is None:
        decoder = THREAD.wuffs = wuffs_decoder()
    return decoder.decode(data)


def fast_decode(image: Image.Image, data: bytes) -> Image.Image | np.ndarray | None:
    """A PNG or GIF decoded by the library that measured fastest for it, with the same pixels
    as Pillow's decoder: 8-bit gray PNGs by imagecodecs's libpng; 8-bit RGB and RGBA PNGs, palette
    PNGs and GIFs by Wuffs (per-kind times in docs/BENCHMARKS.md). A gray picture comes back as
    its uint8 array, a palette picture as its convert("L"), which is all digitflow makes of one.
    None for any other picture, and where the library refuses the file: Pillow decodes those,
    and says what is wrong."""
    if (image.format not in ("PNG", "GIF") or image.mode not in ("L", "RGB", "RGBA", "P")
            or len(image.tile) != 1 or image.tile[0].extents != (0, 0, *image.size)
            or "transparency" in image.info):
        return None
    if image.format == "PNG":
        if (image.tile[0].args not in (image.mode, "P;1", "P;2", "P;4")  # 8-bit samples or indices
                or getattr(image, "n_frames", 1) != 1 or "interlace" in image.info
                or b"eXIf" in data):  # an orientation, before or after the pixels: Pillow reads it
            return None
        if image.mode == "L":
            try:
                pixels = imagecodecs.png_decode(data)
            except Exception:  # whatever libpng refuses, Pillow's error is the one a person reads
                return None
            return pixels if pixels.shape == (image.height, image.width) else None
    decoded = wuffs_decode(data)  # a GIF's first frame
    pixels = decoded.pixbuf  # made anew, at some cost, each time it is asked for
    if decoded.error_message or pixels.shape != (image.height, image.width, 4):
        return None
    rgba = Image.fromarray(pixels, "RGBA")
    return rgba if image.mode == "RGBA" else rgba.convert("RGB" if image.mode == "RGB" else "L")


def simple_webp(data: bytes) -> np.ndarray | None:
    """The RGB pixels of a WebP in the simple lossy format (no alpha, orientation or animation
    by the format's definition), decoded by imagecodecs's libwebp: Pillow's pixels without its
    animation decoder, which it takes every WebP through (decoding a demo scan 1.19 -> 0.97 ms,
    bench/prepare.py). None for every other file, for one over Pillow's pixel limit, and where
    libwebp refuses it: Pillow opens those, and says what is wrong."""
    if data[:4] != b"RIFF" or data[8:16] != b"WEBPVP8 " or len(data) < 30:
        return None
    # The VP8 frame header: 14 bits of width, then of height, after the 3-byte tag and start code
    width, height = (int.from_bytes(data[i:i + 2], "little") & 0x3FFF for i in (26, 28))
    if over_pixel_limit(width, height):
        return None
    try:
        pixels = imagecodecs.webp_decode(data)
    except Exception:  # whatever libwebp refuses, Pillow's error is the one a person reads
        return None
    return pixels if pixels.shape == (height, width, 3) and pixels.dtype == np.uint8 else None


def shrink(image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
    """Box-average a large picture down to about WORKING_SIZE before any per-pixel float work.
    An 8-bit gray picture's array (decode_pixels) too small to reduce stays an array."""
    factor = max(image.shape if isinstance(image, np.ndarray) else image.size) // WORKING_SIZE
    if factor < 2:
        return image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)  # reduced by Pillow, as any other picture is
    if image.mode == "P" and "transparency" not in image.info:  # indices cannot be averaged
        image = palette_gray(image)
    elif image.mode in ("P", "1"):
        image = image.convert("RGBA" if "transparency" in image.info else "L")
    try:
        return image.reduce(factor)
    except ValueError:  # modes Pillow cannot reduce (16-bit): the float path resizes them
        return image


def palette_gray(image: Image.Image) -> Image.Image:
    """image.convert("L") of a palette picture, as a lookup table of its 256 indices: the same
    values (the table is convert("L") of a strip of every index, with the picture's palette),
    about 0.25 ms less per GIF or palette PNG among the demo's scans (bench/prepare.py)."""
    strip = image.crop((0, 0, 256, 1))  # the palette comes along
    strip.putdata(range(256))
    return image.point(list(strip.convert("L").tobytes()), "L")


def grayscale(image: Image.Image | np.ndarray) -> np.ndarray:
    """Float32 luminance in [0, 1], with any transparency composited onto paper. An array is an
    8-bit gray picture's pixels (decode_pixels)."""
    if isinstance(image, np.ndarray) or image.mode == "L":
        return np.divide(np.asarray(image), 255, dtype=np.float32)  # float32(gray) / 255, one pass
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() <= 65535 else pixels.max()
        return pixels / top if image.mode != "F" else _stretch(pixels)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.divide(np.asarray(image if image.mode == "RGBA" else image.convert("RGBA")), 255,
                         dtype=np.float32)  # float32(rgba) / 255, in one pass
        gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        alpha = rgba[..., 3]
        if alpha.min() < 1:
            # Paper is whatever contrasts with the opaque strokes: light for dark ink and back.
            ink_level = float((gray * alpha).sum() / max(alpha.sum(), 1e-6))
            paper = 1.0 if ink_level < 0.5 else 0.0
            gray = gray * alpha + paper * (1 - alpha)
        return gray
    return grayscale(image.convert("L"))


def _stretch(pixels: np.ndarray) -> np.ndarray:
    low, high = float(pixels.min()), float(pixels.max())
    return (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)


def ink(gray: np.ndarray) -> np.ndarray:
    """Ink as bright values on a black, flat background, whatever the paper and lighting."""
    paper = median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]))
    if paper > 0.5:  # the frame is mostly paper; light paper means dark ink
        gray, paper = 1 - gray, 1 - paper
    if min(gray.shape) > SMALL:
        return np.maximum(gray - background(gray), 0)  # np.clip's values, without its overhead
    return np.maximum(gray - paper, 0)


def median(values: np.ndarray) -> float:
    """np.median, without its overhead (it shows at thousands of small images a second)."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    return float(ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2)


def background(gray: np.ndarray, factor: int = 4) -> np.ndarray:
    """The paper's brightness everywhere, strokes removed: a grey opening wider than a stroke.

    Lighting varies slowly, so the opening runs on a 4× smaller copy and is scaled back up.
    """
    h, w = (n // factor * factor for n in gray.shape)
    # Each block's minimum as the minimum of strided slices: 10× faster than a reshaped
    # .min(axis=(1, 3)) on a 160-pixel picture, and the same values
    row_minima = np.minimum.reduce([gray[i:h:factor, :w] for i in range(factor)])
    small = np.minimum.reduce([row_minima[:, j::factor] for j in range(factor)])
    opened = opening(small, max(4, min(small.shape) // 4))
    # Each small pixel back over its factor × factor block; the few rows and columns the blocks
    # left over repeat the last ones (a take per axis: cheaper than np.ix_ or repeat and pad)
    rows = np.minimum(np.arange(gray.shape[0]) // factor, opened.shape[0] - 1)
    cols = np.minimum(np.arange(gray.shape[1]) // factor, opened.shape[1] - 1)
    return opened.take(rows, axis=0).take(cols, axis=1)


def opening(pixels: np.ndarray, size: int) -> np.ndarray:
    """ndimage.grey_opening(pixels, size=size): the same four one-dimensional passes it makes,
    without the time it spends on every call working out a footprint before making them."""
    eroded = along(ndimage.minimum_filter1d, along(ndimage.minimum_filter1d, pixels, size, axis=0),
                   size, axis=1)
    origin = -1 if size % 2 == 0 else 0  # a dilation mirrors the erosion's window
    dilated = along(ndimage.maximum_filter1d, eroded, size, axis=0, origin=origin)
    return along(ndimage.maximum_filter1d, dilated, size, axis=1, origin=origin)


def along(filter1d, pixels: np.ndarray, *args, **options) -> np.ndarray:
    """One of ndimage's 1-D filters, into an array made here: ndimage makes its own by the name
    of the input's type, a lookup that is a good part of the filter's time on a picture this
    small. The same values: the output has the input's type."""
    return filter1d(pixels, *args, output=np.empty_like(pixels), **options)


def digit_mask(strokes: np.ndarray, peak: float) -> np.ndarray:
    """The connected pieces of ink that make the digit: specks and border shadows left out."""
    mask = strokes > 0.4 * peak
    # Labelled within the ink's bounding box, which holds every piece: the same pieces, and
    # a piece touches the picture's edge where it touches a side of the box on that edge.
    top, bottom, left, right = bounds(mask)
    labels, count = ndimage.label(mask[top:bottom, left:right], structure=EIGHT_CONNECTED)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    sides = [labels[0]] * (top == 0) + [labels[-1]] * (bottom == mask.shape[0])
    sides += [labels[:, 0]] * (left == 0) + [labels[:, -1]] * (right == mask.shape[1])
    edge = np.zeros(count + 1, dtype=bool)
    edge[np.concatenate(sides or [[0]])] = True
    largest = sizes.max()
    keep = (sizes >= 0.1 * largest) & ~(edge[1:] & (sizes < 0.5 * largest))
    kept = np.zeros_like(mask)
    kept[top:bottom, left:right] = np.concatenate([[False], keep])[labels]  # 0: the background
    return kept


def bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """top, bottom, left, right of the True pixels (bottom and right exclusive); all False: 0s."""
    # .nonzero()[0] is np.flatnonzero of a 1-D array, without its 0.6 µs of wrapping
    rows = mask.any(axis=1).nonzero()[0]
    if not len(rows):
        return 0, 0, 0, 0
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    cols = mask[top:bottom].any(axis=0).nonzero()[0]  # only the rows with ink hold any
    return top, bottom, int(cols[0]), int(cols[-1]) + 1


def square(mask: np.ndarray, radius: int, combine) -> np.ndarray:
    """`combine` (np.logical_or: dilation, np.logical_and: erosion) over the (2·radius + 1)²
    square around each pixel, the square cut off at the edges: ndimage's maximum_filter and
    minimum_filter of a boolean mask in modes "reflect" and "nearest", without their overhead."""
    out = mask.copy()
    for turn in (np.asarray, np.transpose):  # down the columns, then along the rows
        before = out.copy()
        o, b = turn(out), turn(before)
        for d in range(1, radius + 1):
            combine(o[d:], b[:-d], out=o[d:])
            combine(o[:-d], b[d:], out=o[:-d])
    return out


def blur(pixels: np.ndarray) -> np.ndarray:
    """ndimage.gaussian_filter(pixels, 1): the same passes (down the columns, then along the
    rows) with the same weights, so the same values."""
    return along(ndimage.correlate1d, along(ndimage.correlate1d, pixels, GAUSSIAN, axis=0), GAUSSIAN,
                 axis=1)


def blurred_peak(strokes: np.ndarray) -> float:
    """The maximum of ndimage.gaussian_filter(strokes, 1), computed only where it can be.

    The filter is a weighted mean over the 9 × 9 square around a pixel (radius 4, weights summing
    to 1), so it is nowhere above the brightest stroke in that square. Its value at the brightest
    pixel, `low`, is therefore reached only within 4 pixels of some stroke at least as bright
    as `low`; the filter runs on those pixels and a margin of 4 that their squares need. The
    values are the filter's own: each is computed from the same neighbours in the same order,
    and the picture's own edges are reflected as before.
    """
    y, x = np.unravel_index(int(np.argmax(strokes)), strokes.shape)
    window = strokes[max(y - 4, 0):y + 5, max(x - 4, 0):x + 5]
    low = float(blur(window)[min(y, 4), min(x, 4)])
    top, bottom, left, right = bounds(strokes >= low)
    if bottom == 0:  # no stroke reaches it (NaN pixels): the whole picture
        return float(blur(strokes).max())
    t, l = max(top - 8, 0), max(left - 8, 0)
    blurred = blur(strokes[t:bottom + 8, l:right + 8])
    return float(blurred[max(top - 4, 0) - t:bottom + 4 - t, max(left - 4, 0) - l:right + 4 - l].max())


def thicken(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Widen pen-thin strokes towards MNIST's proportions, which the models learnt."""
    want = STROKE_FRACTION * max(crop.shape) / 2
    if want < 1.5 or not mask.any():  # a stroke is at least a pixel wide: nothing to widen
        return crop
    if wide_enough(mask, want - 0.5):  # the radius below would round to 0
        return crop
    half_width = np.percentile(ndimage.distance_transform_edt(mask)[mask], 90)
    radius = int(round(want - half_width))
    if radius < 1:
        return crop
    disk = np.hypot(*np.ogrid[-radius:radius + 1, -radius:radius + 1]) <= radius
    return ndimage.grey_dilation(crop, footprint=disk)


def wide_enough(mask: np.ndarray, half_width: float) -> bool:
    """Whether the 90th percentile of the mask's distance transform is over `half_width`, when a
    square erosion can tell: thicken's answer without the transform on nine scans in ten.

    A pixel that survives erosion by a square of side 2k − 1 is at least k from the background
    in the chessboard metric, so at least k in the Euclidean one. If the survivors are more than
    a tenth of the mask, the percentile (at or above the order statistic at 0.9·(n − 1)) is at
    least k, and k is over `half_width`. Otherwise the transform decides, as it does for a mask
    with no background at all (SciPy then measures from a pixel outside a corner).
    """
    k = math.floor(half_width) + 1
    n = int(np.count_nonzero(mask))
    if n == mask.size:
        return False
    survivors = square(mask, k - 1, np.logical_and)
    return int(np.count_nonzero(survivors)) >= n - int(0.9 * (n - 1))


def to_mnist(image: Image.Image | np.ndarray) -> np.ndarray:
    """The 28×28 float32 model input for one decoded picture (an Image, or an 8-bit gray
    picture's uint8 array); ImageError if there is no digit."""
    gray = grayscale(shrink(image))
    scale = WORKING_SIZE / max(gray.shape)
    if scale < 1:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX))
    strokes = ink(gray)
    # On photos, blur first so that sensor noise cannot pass for ink.
    peak = blurred_peak(strokes) if min(strokes.shape) > SMALL else float(strokes.max())
    if peak < MIN_CONTRAST:
        raise ImageError("no digit found: the image is blank or has too little contrast")
    mask = digit_mask(strokes, peak)
    # The digit's extent includes its faint anti-aliased rim, as MNIST's bounding boxes did: the
    # mask widened by 2 pixels, so within 2 of its bounding box.
    top, bottom, left, right = bounds(mask)
    top, left = max(top - 2, 0), max(left - 2, 0)
    box = slice(top, bottom + 2), slice(left, right + 2)
    extent = square(mask[box], 2, np.logical_or) & (strokes[box] > 0.05 * peak)
    t, b, l, r = bounds(extent)
    top, bottom, left, right = top + t, top + b, left + l, left + r
    crop = np.minimum(strokes[top:bottom, left:right] / peak, 1) * extent[t:b, l:r]  # strokes >= 0
    crop = thicken(crop, mask[top:bottom, left:right])
    return place_in_canvas(fit_box(crop))


def fit_box(crop: np.ndarray) -> np.ndarray:
    """Resize so the longer side is 20 pixels, keeping the aspect ratio; ink peaks at 1."""
    h, w = crop.shape
    factor = BOX / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = crop.astype(np.float32)
    if size != (w, h):  # an MNIST-sized crop is already there
        resample = Image.Resampling.BOX if factor < 1 else Image.Resampling.BILINEAR
        small = np.asarray(Image.fromarray(small).resize(size, resample))
    return np.clip(small / max(float(small.max()), 1e-6), 0, 1)


def place_in_canvas(digit: np.ndarray) -> np.ndarray:
    """Paste into 28×28 so the centre of mass lands where MNIST's do: pixel (14, 14)."""
    total = float(digit.sum(dtype=np.float64))  # as ndimage.center_of_mass, without its overhead
    cy = float(digit.sum(axis=1, dtype=np.float64) @ np.arange(digit.shape[0])) / total
    cx = float(digit.sum(axis=0, dtype=np.float64) @ np.arange(digit.shape[1])) / total
    top = int(round(CANVAS / 2 - cy))
    left = int(round(CANVAS / 2 - cx))
    top = min(max(top, 0), CANVAS - digit.shape[0])
    left = min(max(left, 0), CANVAS - digit.shape[1])
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    canvas[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return canvas


def preprocess(data: bytes) -> np.ndarray:
    """File bytes → 28×28 model input. Raises ImageError with the reason it cannot."""
    return to_mnist(decode_pixels(data))
