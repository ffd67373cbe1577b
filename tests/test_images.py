"""Preprocessing: any image file → the 28×28 input MNIST models were trained on."""

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from scipy import ndimage

from support import encode
from tasks.images import (
    ImageError, decode, fast_decode, palette_gray, preprocess, simple_webp, to_mnist)


def scan_of(digit: np.ndarray, scale: int = 8, dark_ink: bool = True, margin: int = 60) -> np.ndarray:
    """The digit enlarged and put off-centre on a larger uint8 page."""
    big = np.asarray(Image.fromarray(digit).resize((28 * scale,) * 2, Image.Resampling.BICUBIC))
    page = np.zeros((big.shape[0] + 2 * margin, big.shape[1] + 3 * margin), dtype=np.uint8)
    page[margin:margin + big.shape[0], 2 * margin:2 * margin + big.shape[1]] = big
    return 255 - page if dark_ink else page


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_mnist_digit_comes_back_nearly_unchanged(mnist):
    # MNIST digits are already in the form preprocessing produces: it must not distort them.
    scores = [similarity(preprocess(encode(Image.fromarray(d))), d) for d in mnist["x_test"][:100]]
    assert np.mean(scores) > 0.95


@pytest.mark.parametrize("dark_ink", [True, False])
def test_both_polarities_give_white_ink_on_black(mnist, dark_ink):
    digit = mnist["x_test"][0]
    out = preprocess(encode(Image.fromarray(scan_of(digit, dark_ink=dark_ink))))
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() == pytest.approx(1.0)
    assert out[0].max() == 0 and out[:, 0].max() == 0  # background black, margins empty
    assert similarity(out, digit) > 0.8


def test_digit_is_fitted_into_20_pixels_and_centred_by_mass(mnist):
    out = preprocess(encode(Image.fromarray(scan_of(mnist["x_test"][1], scale=12))))
    rows, cols = np.flatnonzero(out.max(axis=1) > 0), np.flatnonzero(out.max(axis=0) > 0)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 20
    cy, cx = ndimage.center_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_aspect_ratio_is_kept(mnist):
    one = mnist["x_test"][2]  # a tall, thin "1"
    out = preprocess(encode(Image.fromarray(scan_of(one))))
    rows, cols = np.flatnonzero(out.max(axis=1) > 0.1), np.flatnonzero(out.max(axis=0) > 0.1)
    assert rows[-1] - rows[0] > 2 * (cols[-1] - cols[0])


@pytest.mark.parametrize("ink", [0, 255])
def test_transparent_background_is_composited_onto_contrasting_paper(mnist, ink):
    # A drawing app's export: the stroke lives in the alpha channel, the paper is transparent.
    alpha = scan_of(mnist["x_test"][0], dark_ink=False)
    rgba = np.dstack([np.full_like(alpha, ink)] * 3 + [alpha])
    out = preprocess(encode(Image.fromarray(rgba, "RGBA")))
    assert similarity(out, mnist["x_test"][0]) > 0.8


@pytest.mark.parametrize("mode", ["RGB", "P", "CMYK", "I;16", "LA", "1"])
def test_modes(mnist, mode):
    page = Image.fromarray(scan_of(mnist["x_test"][3]))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(page).astype(np.uint16) * 257)
    else:
        image = page.convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    out = preprocess(encode(image, fmt))
    assert similarity(out, mnist["x_test"][3]) > 0.75


def test_exif_orientation_is_honoured(mnist):
    page = Image.fromarray(scan_of(mnist["x_test"][1]))
    rotated = page.transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the tag that says "rotate 90° clockwise to view"
    upright = preprocess(encode(rotated, "JPEG", exif=exif, quality=95))
    assert similarity(upright, preprocess(encode(page, "JPEG", quality=95))) > 0.9


def test_animated_gif_uses_the_first_frame(mnist):
    frames = [Image.fromarray(scan_of(mnist["x_test"][i])) for i in (0, 1)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert similarity(preprocess(data), preprocess(encode(frames[0], "GIF"))) > 0.99


def test_speck_of_dust_and_border_shadow_are_ignored(mnist):
    page = scan_of(mnist["x_test"][0])
    page[5:8, 5:8] = 0  # a speck far from the digit
    page[:, -6:] = 30  # the dark edge of a scanner lid
    clean = preprocess(encode(Image.fromarray(scan_of(mnist["x_test"][0]))))
    assert similarity(preprocess(encode(Image.fromarray(page))), clean) > 0.95


def test_blank_page_is_not_a_digit():
    page = np.full((300, 200), 235, dtype=np.uint8) + np.random.default_rng(0).integers(
        0, 6, (300, 200), dtype=np.uint8)
    with pytest.raises(ImageError, match="no digit found"):
        preprocess(encode(Image.fromarray(page)))


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"just some text with an image name", "not an image"),
        (encode(Image.new("L", (300, 300), 255))[:100], "truncated or damaged"),
    ],
)
def test_bad_files_raise_specific_errors(data, reason):
    with pytest.raises(ImageError, match=reason):
        preprocess(data)


def test_scanner_and_phone_formats_give_the_pngs_input(mnist):
    page = Image.fromarray(scan_of(mnist["x_test"][0]))
    expected = preprocess(encode(page))
    assert np.array_equal(preprocess(encode(page, "PPM")), expected)  # binary PGM, as scanimage
    rgb = page.convert("RGB")
    assert np.array_equal(preprocess(encode(rgb, "PPM")), preprocess(encode(rgb)))
    bilevel = page.point(lambda v: 255 * (v > 128)).convert("1")
    assert np.array_equal(preprocess(encode(bilevel, "PPM")), preprocess(encode(bilevel)))
    assert similarity(preprocess(encode(rgb, "AVIF", quality=90)), expected) > 0.98  # lossy


# The first bytes of an iPhone photo and of a HEIF with only the container brand; then an AVIF
# whose pixels are broken, which must not be called HEIF.
@pytest.mark.parametrize("brands, reason", [
    (b"heic\0\0\0\0mif1heic", "HEIF/HEIC photo"),
    (b"mif1\0\0\0\0mif1heic", "HEIF/HEIC photo"),
    (b"mif1\0\0\0\0mif1avif", "not an image Pillow can read|truncated or damaged"),
])
def test_heif_photos_say_how_to_convert_them(brands, reason):
    box = len(brands) + 8
    data = box.to_bytes(4, "big") + b"ftyp" + brands + b"\0\0\0\x08mdat" + bytes(64)
    with pytest.raises(ImageError, match=reason):
        preprocess(data)


@pytest.mark.parametrize("size", [(120, 100), (200, 200)])  # over the limit; over twice it
def test_decompression_bomb_is_refused(monkeypatch, size):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow's limit, scaled down
    with pytest.raises(ImageError, match="decompression bomb"):
        decode(encode(Image.new("L", size, 255)))


def test_absurd_dimensions_do_not_crash():
    thin = np.full((1, 50_000), 255, dtype=np.uint8)
    thin[0, 20_000:20_050] = 0
    out = preprocess(encode(Image.fromarray(thin)))
    assert out.shape == (28, 28)


@pytest.mark.parametrize("size", [1, 2, 27, 108, 111])
def test_fast_median_is_numpys(size):
    from tasks.images import median

    values = np.random.default_rng(size).random(size, dtype=np.float32)
    assert median(values) == float(np.median(values))


def test_digit_lands_where_scipys_centre_of_mass_says(mnist):
    from tasks.images import fit_box, place_in_canvas

    for digit in mnist["x_test"][:50]:
        rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
        box = fit_box(digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] / np.float32(255))
        cy, cx = ndimage.center_of_mass(place_in_canvas(box))
        assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


@pytest.mark.parametrize("shape", [(65, 65), (160, 123), (97, 160), (130, 131)])
def test_background_is_the_grey_opening_of_block_minima(shape):
    from tasks.images import background

    gray = np.random.default_rng(shape[1]).random(shape, dtype=np.float32)
    h, w = shape[0] // 4 * 4, shape[1] // 4 * 4
    small = gray[:h, :w].reshape(h // 4, 4, w // 4, 4).min(axis=(1, 3))
    opened = ndimage.grey_opening(small, size=max(4, min(small.shape) // 4))
    rows = np.minimum(np.arange(shape[0]) // 4, opened.shape[0] - 1)
    cols = np.minimum(np.arange(shape[1]) // 4, opened.shape[1] - 1)
    assert np.array_equal(background(gray), opened[np.ix_(rows, cols)])


@pytest.mark.parametrize("size", [1, 4, 5, 10, 13])
def test_opening_is_ndimages_grey_opening(size):
    from tasks.images import opening

    rng = np.random.default_rng(size)
    for shape in [(1, 1), (3, 7), (32, 40), (40, 21), (9, 50)]:
        pixels = rng.random(shape, dtype=np.float32)
        pixels[rng.random(shape) < 0.02] = np.nan  # a float picture's NaN goes where SciPy's does
        assert np.array_equal(opening(pixels, size), ndimage.grey_opening(pixels, size=size),
                              equal_nan=True)


def test_wide_enough_never_contradicts_the_distance_transform(mnist):
    from tasks.images import wide_enough

    decided = undecided = 0
    for i, digit in enumerate(mnist["x_test"][:40]):
        scale = 2 + i % 5
        big = np.asarray(Image.fromarray(digit).resize((28 * scale,) * 2, Image.Resampling.BILINEAR))
        # iterations=0 dilates until nothing changes: a mask with no background at all
        mask = ndimage.binary_dilation(big > 128, iterations=i % 3)
        distances = ndimage.distance_transform_edt(mask)[mask]
        half_width = np.percentile(distances, 90)
        for threshold in np.unique(np.concatenate([distances[::37], [half_width, half_width - 1e-9],
                                                   np.arange(0.5, 8, 0.5)])):
            if wide_enough(mask, float(threshold)):
                assert half_width > threshold
                decided += 1
            else:
                undecided += 1
    assert decided > 100 and undecided > 100  # both ways taken: the shortcut is not idle


@pytest.mark.parametrize("radius", [0, 1, 2, 4])
def test_square_is_ndimages_maximum_and_minimum_filter(radius):
    from tasks.images import square

    rng = np.random.default_rng(radius)
    for shape in [(1, 1), (3, 7), (40, 33), (9, 160)]:
        mask = rng.random(shape) < 0.3
        assert np.array_equal(square(mask, radius, np.logical_or),
                              ndimage.maximum_filter(mask, size=2 * radius + 1))
        assert np.array_equal(square(~mask, radius, np.logical_and),
                              ndimage.minimum_filter(~mask, size=2 * radius + 1, mode="nearest"))


def pages(mnist, count: int):
    """Ink pages as preprocessing sees them: digits of several sizes, some against the edges and
    corners, some with specks, most with a shadow along one border or another."""
    rng = np.random.default_rng(1)
    for i, digit in enumerate(mnist["x_test"][:count]):
        big = np.asarray(Image.fromarray(digit).resize((28 * (3 + i % 2),) * 2)) / np.float32(255)
        page = np.zeros((160, 130), dtype=np.float32)
        top, left = [(0, 0), (160 - big.shape[0], 130 - big.shape[1]), (20, 10)][i % 3]
        page[top:top + big.shape[0], left:left + big.shape[1]] = big
        if i % 2:  # specks: the ink's bounding box then spans the picture
            page[rng.integers(0, 160, 5), rng.integers(0, 130, 5)] = 0.9
        shadow = [np.s_[40:120, -3:], np.s_[:3, 30:100], np.s_[40:120, :3], np.s_[-3:, 30:100],
                  np.s_[70:73, 30:100]][i % 5]  # the last touches no edge: it is kept
        page[shadow] = np.maximum(page[shadow], 0.6)
        yield page + rng.random(page.shape, dtype=np.float32) * 0.05


def test_blurred_peak_is_the_gaussian_filters_maximum(mnist):
    from tasks.images import blur, blurred_peak

    for strokes in [*pages(mnist, 30), np.random.default_rng(2).random((97, 160), dtype=np.float32)]:
        blurred = ndimage.gaussian_filter(strokes, 1)
        assert np.array_equal(blur(strokes), blurred)
        assert blurred_peak(strokes) == float(blurred.max())


def test_digit_mask_is_the_same_as_labelling_the_whole_picture(mnist):
    from tasks.images import digit_mask

    for strokes in pages(mnist, 30):
        peak = float(strokes.max())
        mask = strokes > 0.4 * peak  # the pieces, as labelled over the whole picture
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())[1:]
        edge = np.zeros(count + 1, dtype=bool)
        edge[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = True
        keep = (sizes >= 0.1 * sizes.max()) & ~(edge[1:] & (sizes < 0.5 * sizes.max()))
        assert np.array_equal(digit_mask(strokes, peak), np.concatenate([[False], keep])[labels])


def colour_pictures(mode: str) -> list[Image.Image]:
    """Noise, smooth gradients, flat paper and a digit, in odd sizes: rows that PNG's filters
    (chosen per row by the encoder) treat differently."""
    rng = np.random.default_rng(len(mode))
    channels = len(mode)
    noise = rng.integers(0, 256, (37, 53, channels), dtype=np.uint8)
    ramp = np.linspace(0, 255, 301 * 7 * channels).astype(np.uint8).reshape(7, 301, channels)
    flat = np.full((90, 1, channels), 200, dtype=np.uint8)
    page = np.dstack([scan_of(np.asarray(Image.new("L", (28, 28))) + 9)] * channels)
    page[40:60, 50:200] = rng.integers(0, 256, (20, 150, channels), dtype=np.uint8)
    return [Image.fromarray(p[..., 0] if mode == "L" else p, mode) for p in (noise, ramp, flat, page)]


def pillows(data: bytes, mode: str) -> np.ndarray:
    """The pixels Pillow decodes from a file, converted as digitflow takes a picture of that mode
    (a palette picture: its gray values)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L" if mode == "P" else mode))


def palette_pictures() -> list[Image.Image]:
    """colour_pictures as palette pictures with 2 to 256 colours (a PNG of 1, 4 and 8 bits an
    index), and with indices past their palette, which a decoder must read as black."""
    rng = np.random.default_rng(7)
    pictures = [p.convert("P", palette=Image.Palette.ADAPTIVE, colors=c)
                for p, c in zip(colour_pictures("RGB"), (256, 2, 16, 100))]
    short = Image.fromarray(rng.integers(0, 256, (31, 47), dtype=np.uint8), "P")
    short.putpalette(rng.integers(0, 256, 3 * 20, dtype=np.uint8).tobytes())
    return pictures + [short]


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_pngs_have_pillows_pixels_when_the_fast_decoders_decode_them(mode, level):
    chunks = PngImagePlugin.PngInfo()
    chunks.add(b"gAMA", (45455).to_bytes(4, "big"))  # a gamma a decoder must not apply
    chunks.add_text("Software", "a scanner")
    for picture in palette_pictures() if mode == "P" else colour_pictures(mode):
        data = encode(picture, compress_level=level, pnginfo=chunks)
        fast = fast_decode(Image.open(io.BytesIO(data)), data)
        assert fast is not None  # decoded (a gray picture as its array)...
        assert isinstance(fast, np.ndarray) if mode == "L" else fast.mode == mode.replace("P", "L")
        assert np.array_equal(np.asarray(fast), pillows(data, mode))  # ...to Pillow's pixels
        assert np.array_equal(np.asarray(decode(data)), pillows(data, mode))


@pytest.mark.parametrize("options", [{}, {"interlace": True}, {"optimize": True}])
def test_gifs_have_pillows_pixels_when_wuffs_decodes_them(mnist, options):
    gray = Image.fromarray(scan_of(mnist["x_test"][3]))  # Pillow reads a gray palette as mode L
    for picture in palette_pictures() + [gray]:
        data = encode(picture, "GIF", **options)
        fast = fast_decode(Image.open(io.BytesIO(data)), data)
        assert fast is not None and fast.mode == "L"
        assert np.array_equal(np.asarray(fast), pillows(data, "P"))
    frames = palette_pictures()[:2]  # an animation: its first frame
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], **options)
    assert np.array_equal(np.asarray(decode(data)), pillows(encode(frames[0], "GIF"), "P"))


def test_threads_decode_at_once_each_to_its_own_pixels():
    # Readers in a scoring task decode side by side; Wuffs's decoder releases the GIL while it
    # decodes, so a decoder shared by threads gives wrong pixels or crashes the process.
    rng = np.random.default_rng(3)
    files = [encode(Image.fromarray(rng.integers(0, 256, (*rng.integers(20, 300, 2), 3), dtype=np.uint8))
                    .convert("P", palette=Image.Palette.ADAPTIVE, colors=int(rng.integers(2, 256))),
                    ("PNG", "GIF")[i % 2]) for i in range(40)]
    expected = [pillows(data, "P") for data in files]
    with ThreadPoolExecutor(4) as pool:
        same = pool.map(lambda i: np.array_equal(np.asarray(decode(files[i % 40])), expected[i % 40]),
                        range(4000))
        assert all(same)


@pytest.mark.parametrize("scale", [1, 7, 9, 13, 21])  # 32 to 672 pixels: both sides of shrink()
def test_a_gray_pictures_array_gives_the_input_its_image_gives(mnist, scale):
    page = scan_of(mnist["x_test"][4], scale=scale, margin=2 * scale)
    assert np.array_equal(to_mnist(page), to_mnist(Image.fromarray(page)))


def test_pictures_the_fast_decoders_leave_to_pillow_decode_as_before(mnist):
    page = Image.fromarray(scan_of(mnist["x_test"][1])).convert("RGB")
    keyed = encode(page, transparency=(255, 255, 255))  # RGB with a transparent colour
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = encode(page, exif=exif)
    gray16 = encode(Image.fromarray(np.asarray(page.convert("L")).astype(np.uint16) * 257))
    see_through = page.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    for data in (keyed, turned, encode(page.convert("1")), gray16, encode(page.convert("LA")),
                 encode(see_through, transparency=3),
                 encode(see_through, "GIF", transparency=3)):
        assert fast_decode(Image.open(io.BytesIO(data)), data) is None
    assert decode(turned).size == page.size[::-1]  # the orientation still honoured


@pytest.mark.parametrize("fmt, mode", [("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"),
                                       ("GIF", "P")])
def test_damaged_files_are_refused_as_pillow_refuses_them(mnist, fmt, mode):
    page = Image.fromarray(scan_of(mnist["x_test"][1])).convert(mode)
    data = encode(page, fmt)
    with pytest.raises(ImageError, match="truncated or damaged"):
        decode(data[:len(data) // 2])
    rng = np.random.default_rng(1)
    refused = 0
    for place in rng.integers(100, len(data) - 20, 40):  # a flipped byte, mostly in the pixels
        broken = bytearray(data)
        broken[place] ^= 0xFF
        try:
            expected = pillows(bytes(broken), mode)
        except (OSError, SyntaxError, ValueError):  # Pillow refuses it: so must digitflow
            refused += 1
            with pytest.raises(ImageError, match="truncated or damaged|not an image"):
                decode(bytes(broken))
            continue
        assert np.array_equal(np.asarray(decode(bytes(broken))), expected)
    assert refused > 10


def webp(picture: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    picture.save(out, "WEBP", **options)
    return out.getvalue()


def test_lossy_webps_have_pillows_pixels_when_libwebp_decodes_them(mnist):
    rng = np.random.default_rng(11)
    for i, picture in enumerate(colour_pictures("RGB") + [Image.fromarray(scan_of(mnist["x_test"][2]))]):
        data = webp(picture, quality=int(rng.integers(30, 95)), method=i % 7)
        with Image.open(io.BytesIO(data)) as pillows:
            expected = np.asarray(pillows.convert("RGB"))
        fast = simple_webp(data)
        assert fast is not None and np.array_equal(fast, expected)
        assert np.array_equal(np.asarray(decode(data)), expected)


def test_webps_libwebp_leaves_to_pillow_decode_as_before(mnist, monkeypatch):
    page = Image.fromarray(scan_of(mnist["x_test"][1])).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = webp(page, exif=exif)
    see_through = page.convert("RGBA")
    see_through.putalpha(128)
    others = [turned, webp(page, lossless=True), webp(see_through),
              webp(page, save_all=True, append_images=[page.rotate(90)])]
    for data in others:
        assert simple_webp(data) is None
        assert decode(data).size in (page.size, page.size[::-1])
    assert decode(turned).size == page.size[::-1]  # the orientation still honoured
    lossy = webp(page)
    with pytest.raises(ImageError, match="truncated or damaged"):
        decode(lossy[:len(lossy) // 2])
    assert simple_webp(lossy[:len(lossy) // 2]) is None
    assert simple_webp(lossy) is not None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", page.width * page.height - 1)
    assert simple_webp(lossy) is None  # over Pillow's limit: decode refuses it
    with pytest.raises(ImageError, match="decompression bomb"):
        decode(lossy)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", None])
def test_palette_gray_is_pillows_conversion(fmt):
    rng = np.random.default_rng(5)
    for colours in (1, 2, 16, 100, 256):  # indices past a short palette included
        for width in (1, 3, 300):
            image = Image.fromarray(rng.integers(0, 256, (7, width), dtype=np.uint8), "P")
            image.putpalette(rng.integers(0, 256, 3 * colours, dtype=np.uint8).tobytes())
            if fmt:  # as Pillow decodes it (pictures the fast decoders leave to Pillow)
                image = Image.open(io.BytesIO(encode(image, fmt)))
                image.load()
            assert image.mode == "P"
            assert np.array_equal(np.asarray(palette_gray(image)), np.asarray(image.convert("L")))
