"""Hostile input: whatever bytes or pictures arrive, preprocessing answers or says why, never
crashes; and model files are loaded only as safe .keras archives."""

import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from support import encode
from tasks.images import ImageError, preprocess

FORMATS = ["PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF"]


def check(data: bytes) -> None:
    try:
        out = preprocess(data)
    except ImageError as exc:
        assert str(exc)  # a reason a person can read
        return
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash_the_decoder(data):
    check(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(np.uint8, st.tuples(st.integers(1, 80), st.integers(1, 80))),
       st.sampled_from(FORMATS), st.sampled_from(["L", "RGB", "RGBA", "P", "1"]))
def test_random_pictures_in_any_format_and_mode_never_crash(pixels, fmt, mode):
    image = Image.fromarray(pixels).convert(mode)
    if fmt == "JPEG" and mode in ("RGBA", "P"):
        image = image.convert("RGB")
    check(encode(image, fmt))


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.integers(0, 5000))
def test_damaged_real_files_never_crash(noise, cut):
    data = encode(np.random.default_rng(0).integers(0, 255, (60, 60), dtype=np.uint8))
    check(data[:cut] + noise)  # truncated, then garbage


def test_corrupt_foreign_or_unsafe_model_files_are_refused_clearly(tmp_path):
    from tasks.inference import ModelFileError, load_scoring_model

    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip archive")
    with pytest.raises(ModelFileError, match="junk.keras: not a model digitflow can load safely"):
        load_scoring_model(junk)
    pickled = tmp_path / "model.h5"
    pickled.write_bytes(b"anything")
    with pytest.raises(ModelFileError, match="only .keras model files are loaded"):
        load_scoring_model(pickled)
    lambda_layer = tmp_path / "lambda.keras"  # arbitrary code in a Lambda: safe mode refuses it
    with zipfile.ZipFile(lambda_layer, "w") as zf:
        zf.writestr("config.json", json.dumps({
            "module": "keras.layers", "class_name": "Lambda", "registered_name": "Lambda",
            "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {
                "code": "print('pwned')", "defaults": None, "closure": None}}}}))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
    with pytest.raises(ModelFileError, match="lambda.keras: not a model digitflow can load safely"):
        load_scoring_model(lambda_layer)
