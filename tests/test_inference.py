"""The light runtime: the ONNX copy of every preset answers as Keras does, and is used only while
it matches its .keras file."""

import json
import shutil

import numpy as np
import pytest

from support import encode, loaded_modules
from tasks.inference import (
    LIGHT_FILE, RECORD_FILE, ModelFileError, export_light, light_model, load_scoring_model)
from tasks.modelfiles import model_version
from tasks.presets import PRESETS


def trained(preset: str, mnist: dict, images: int = 2000):
    """The preset's network after one epoch on a few MNIST images: weights far from their start."""
    from tasks.models import build_model

    model = build_model(preset)
    model.fit(mnist["x_train"][:images] / 255, mnist["y_train"][:images], epochs=1,
              batch_size=128, verbose=0)
    return model


@pytest.mark.parametrize("preset", list(PRESETS))
def test_the_light_model_answers_as_keras_on_all_mnist_test_images(preset, mnist, tmp_path):
    model = trained(preset, mnist)
    model.save(tmp_path / "model.keras")
    export_light(model, tmp_path / "model.keras")
    x = (mnist["x_test"] / 255).astype(np.float32)
    expected = model.predict(x, batch_size=1024, verbose=0)
    light = light_model(tmp_path / "model.keras")
    got = light.predict(x)
    assert light.version == model_version(model)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert np.abs(got - expected).max() <= 1e-5


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mnist):
    """A seed model saved with its light file, and a second, different one."""
    folder = tmp_path_factory.mktemp("light")
    models = {}
    for name in ("one", "two"):
        model = trained("seed", mnist, images=500 if name == "one" else 800)
        (folder / name).mkdir()
        model.save(folder / name / "model.keras")
        export_light(model, folder / name / "model.keras")
        models[name] = model
    return folder, models


def copy_of(saved, name, tmp_path):
    folder, models = saved
    shutil.copytree(folder / name, tmp_path / name)
    return tmp_path / name / "model.keras", models[name]


def test_a_model_saved_before_light_files_gets_one_on_first_use(saved, tmp_path, mnist):
    keras_path, model = copy_of(saved, "one", tmp_path)
    (keras_path.parent / LIGHT_FILE).unlink()
    (keras_path.parent / RECORD_FILE).unlink()
    scoring = load_scoring_model(keras_path)
    assert scoring.version == model_version(model)
    record = json.loads((keras_path.parent / RECORD_FILE).read_text())
    assert record["model_version"] == model_version(model) and record["max_difference"] <= 1e-5
    x = (mnist["x_test"][:200] / 255).astype(np.float32)
    assert np.abs(scoring.light.predict(x) - model.predict(x, verbose=0)).max() <= 1e-5


def test_a_light_file_that_does_not_match_its_keras_file_is_rebuilt_not_used(saved, tmp_path, mnist):
    keras_path, model = copy_of(saved, "one", tmp_path)
    other = saved[0] / "two" / LIGHT_FILE
    shutil.copyfile(other, keras_path.parent / LIGHT_FILE)  # another model's light file
    x = (mnist["x_test"][:200] / 255).astype(np.float32)
    assert np.abs(light_model(keras_path).predict(x) - model.predict(x, verbose=0)).max() <= 1e-5
    assert (keras_path.parent / LIGHT_FILE).read_bytes() != other.read_bytes()

    replaced, newer = copy_of(saved, "two", tmp_path)
    shutil.copyfile(replaced, keras_path)  # the .keras file replaced; the old light file stays
    light = light_model(keras_path)
    assert light.version == model_version(newer)
    assert np.abs(light.predict(x) - newer.predict(x, verbose=0)).max() <= 1e-5


def test_only_keras_files_are_made_light(tmp_path):
    pickled = tmp_path / "model.h5"
    pickled.write_bytes(b"not looked at")
    with pytest.raises(ModelFileError, match="only .keras model files are loaded"):
        light_model(pickled)


def test_training_only_layers_stay_out_of_the_light_file(mnist, tmp_path):
    """The cnn's RandomTranslation becomes random ops onnxruntime refuses, and Dropout is the
    identity at inference: neither is exported."""
    import onnx

    model = trained("cnn", mnist, images=256)
    model.save(tmp_path / "model.keras")
    export_light(model, tmp_path / "model.keras")
    ops = {node.op_type for node in onnx.load(tmp_path / LIGHT_FILE).graph.node}
    assert "Conv" in ops and not {op for op in ops if "Random" in op or "Dropout" in op}


def test_predict_answers_without_tensorflow_prefect_pandas_or_pydantic(saved, tmp_path, mnist):
    """`digitflow predict one.png`, the command typed most, loads only the light runtime."""
    folder, _ = saved
    picture = tmp_path / "seven.png"
    picture.write_bytes(encode(255 - mnist["x_test"][0]))
    code = "import sys; from flows.cli import main; print(main(['predict', *sys.argv[1:]]))"
    (line, exit_code), heavy = loaded_modules(
        code, {"tensorflow", "keras", "prefect", "pandas", "sklearn", "pydantic"},
        picture, "--model", folder / "one")
    assert line.startswith(f"{picture}: ") and "confidence" in line
    assert exit_code == "0" and heavy == []
