"""The light runtime: every model version also as ONNX, run by onnxruntime without TensorFlow.

`predict`, `score`, the review gallery and Dask workers load models through here and never import
TensorFlow (seconds and hundreds of MB per process); training and evaluation keep Keras. The
`.keras` file stays the source of truth and names the version. Its ONNX copy is made when the
version is recorded (tasks.registry), or once on first use for a version made before, and is used
only while the SHA-256 of both files are as recorded at export: anything else is rebuilt, not run.

Why ONNX and onnxruntime, not LiteRT (`bench/runtimes.py`, docs/BENCHMARKS.md): both answered
within 1e-6 of Keras and start in a fraction of a second. LiteRT started 0.1–0.2 s faster and
~20 MB smaller, but its interpreter may not be shared between threads (scoring predicts from
several), needs a resize and allocation per batch size, and prints an INFO line on stderr per
interpreter; an onnxruntime session is thread-safe and takes any batch. Both fit the targets.
"""

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.calibrate import calibrated
from tasks.mnist import NUM_CLASSES
from tasks.modelfiles import model_version
from tasks.store import atomic_path, file_sha256, read_json, write_json

LIGHT_FILE = "model.onnx"
RECORD_FILE = "model.onnx.json"  # what the light file was made from, and how closely it agreed
MAX_DIFFERENCE = 1e-5  # a light file further than this from Keras on the probe is refused
PROBE_SEED = 0  # the probe batch: the same pictures of noise at every export
PREDICT_BATCH = 1024
PROB_COLUMNS = [f"prob_{d}" for d in range(NUM_CLASSES)]  # the prediction table's, and predict's


class ModelFileError(ValueError):
    """A model file that will not be loaded, and why."""


# Layers that are the identity at inference: left out of the light file. Random augmentation,
# left in, becomes random ops (StatelessRandomUniformV2) that onnxruntime refuses.
TRAINING_ONLY = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                 "GaussianDropout", "GaussianNoise", "AlphaDropout", "RandomTranslation",
                 "RandomRotation", "RandomZoom", "RandomFlip", "RandomContrast", "RandomBrightness")


def inference_model(model):
    """A Sequential model without its training-only layers (sharing their weights); any other
    model as it is."""
    import keras

    if not isinstance(model, keras.Sequential):
        return model
    kept = [layer for layer in model.layers if type(layer).__name__ not in TRAINING_ONLY]
    return keras.Sequential([keras.Input(shape=model.input_shape[1:]), *kept])


def probe_batch(shape: tuple[int, ...]) -> np.ndarray:
    """64 inputs in [0, 1] that exercise every weight: noise at several ink levels."""
    rng = np.random.default_rng(PROBE_SEED)
    return (rng.random((64, *shape)) * rng.random((64,) + (1,) * len(shape))).astype(np.float32)


def export_light(model, keras_path: Path) -> Path:
    """Write the light file beside `keras_path` (the saved `model`), checked against Keras on the
    probe batch, and its record; both renamed into place whole. Needs Keras: training calls it."""
    folder = keras_path.parent
    inference = inference_model(model)
    probe = probe_batch(tuple(model.input_shape[1:]))
    expected = np.asarray(model.predict_on_batch(probe))  # also builds a model never called
    inference.predict_on_batch(probe[:1])  # Keras exports only a model that has been called
    with atomic_path(folder / LIGHT_FILE, suffix=".onnx") as tmp, warnings.catch_warnings():
        # Keras's own tf2onnx patch asks numpy about np.object, which numpy 2 warns about
        warnings.simplefilter("ignore", FutureWarning)
        inference.export(str(tmp), format="onnx", verbose=False)
        difference = float(np.abs(LightModel(session_of(tmp), "").predict(probe) - expected).max())
        if difference > MAX_DIFFERENCE:
            raise ModelFileError(f"{keras_path}: its ONNX export differs from Keras by "
                                 f"{difference:.2g} on the probe batch (at most {MAX_DIFFERENCE})")
    write_json(folder / RECORD_FILE, {
        "keras_sha256": file_sha256(keras_path), "onnx_sha256": file_sha256(folder / LIGHT_FILE),
        "model_version": model_version(model), "max_difference": difference})
    return folder / LIGHT_FILE


def rebuild_light(keras_path: Path) -> None:
    """The light file for a model saved without one (or with one that no longer matches)."""
    import keras

    try:
        model = keras.saving.load_model(keras_path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many kinds; all mean the same to the user
        raise ModelFileError(f"{keras_path}: not a model digitflow can load safely ({exc})") from exc
    export_light(model, keras_path)


def session_of(path: Path):
    import onnxruntime  # here: importing this module for its types costs nothing

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: not the graph optimiser's notes
    # The caller's thread only. Scoring's reader processes have the cores, and onnxruntime's own
    # threads spin between batches: on 30,000 PNGs that was half the flow process's CPU.
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class LightModel:
    """A model version's light file in an onnxruntime session (which threads may share)."""
    session: object
    version: str

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities, PREDICT_BATCH inputs at a time (memory stays flat on large chunks)."""
        name = self.session.get_inputs()[0].name
        if not len(x):
            return np.empty((0, NUM_CLASSES), dtype=np.float32)
        return np.concatenate([self.session.run(None, {name: x[i:i + PREDICT_BATCH]})[0]
                               for i in range(0, len(x), PREDICT_BATCH)])


def matches(record: dict | None, folder: Path, keras_path: Path) -> bool:
    """Whether the light file is the one exported from this `.keras` file, byte for byte."""
    return (record is not None and (folder / LIGHT_FILE).is_file()
            and record.get("keras_sha256") == file_sha256(keras_path)
            and record.get("onnx_sha256") == file_sha256(folder / LIGHT_FILE))


def ensure_light(keras_path: Path) -> dict:
    """The light file's record, the file made or remade first when missing or not matching."""
    if keras_path.suffix != ".keras":
        raise ModelFileError(f"{keras_path}: only .keras model files are loaded (Keras safe mode)")
    folder = keras_path.parent
    if not matches(read_json(folder / RECORD_FILE), folder, keras_path):
        rebuild_light(keras_path)
    return read_json(folder / RECORD_FILE)


def light_model(keras_path: Path) -> LightModel:
    record = ensure_light(keras_path)
    return LightModel(session_of(keras_path.parent / LIGHT_FILE), record["model_version"])


@dataclass(frozen=True)
class Predictions:
    """What a model said of some files, in order; rows of files not read are NaN / -1 / False."""
    probs: np.ndarray  # (files, NUM_CLASSES), float32
    ok: np.ndarray  # whether the file was read
    label: np.ndarray  # the most likely digit, -1 where not read
    confidence: np.ndarray  # its calibrated probability
    review: np.ndarray  # whether a person should check it


@dataclass(frozen=True)
class ScoringModel:
    """A model loaded for scoring, its version, and how its probabilities are read."""
    light: LightModel
    temperature: float = 1.0  # divides the logits (tasks.calibrate); 1: the model's own softmax
    threshold: float | None = None  # calibrated confidence below this is flagged for review
    references: dict | None = None  # each test set's statistics at training time (tasks.drift)

    @property
    def version(self) -> str:
        return self.light.version

    def probabilities(self, inputs: list[np.ndarray]) -> np.ndarray:
        x = np.stack(inputs) if inputs else np.empty((0, 28, 28), dtype=np.float32)
        return calibrated(self.light.predict(x), self.temperature)

    def flags(self, confidence: np.ndarray) -> np.ndarray:
        """Which predictions a person should check; none for a model trained before thresholds."""
        if self.threshold is None:
            return np.zeros(len(confidence), dtype=bool)
        return confidence < self.threshold

    def predict(self, read: list[tuple]) -> Predictions:
        """Predictions from (sha256, model input or None, error or None) per file."""
        ok = np.array([x is not None for _, x, _ in read], dtype=bool)
        probs = np.full((len(read), NUM_CLASSES), np.nan, dtype=np.float32)
        probs[ok] = self.probabilities([x for _, x, _ in read if x is not None])
        confidence = probs.max(axis=1)
        return Predictions(probs, ok, np.where(ok, np.nan_to_num(probs).argmax(axis=1), -1),
                           confidence, self.flags(np.nan_to_num(confidence, nan=1.0)) & ok)


def top3(probs) -> list[list]:
    """The three most likely digits, [digit, probability] each, most likely first."""
    probs = np.asarray(probs, dtype=np.float64)
    return [[int(d), round(float(probs[d]), 4)] for d in np.argsort(probs)[::-1][:3]]


@functools.lru_cache(maxsize=2)
def _load(path: str, mtime_ns: int, metadata_mtime_ns: int | None) -> ScoringModel:
    folder = Path(path).parent
    # What training found beside the model: its calibration and the drift references
    found = (read_json(folder / "metadata.json") or {}).get("calibration") or {}
    return ScoringModel(light_model(Path(path)), found.get("temperature", 1.0),
                        found.get("threshold"), read_json(folder / "calibration" / "reference.json"))


def load_scoring_model(path: Path) -> ScoringModel:
    """The model, its version and calibration, loaded once per process (again if a file changes)."""
    metadata = path.parent / "metadata.json"
    return _load(str(path), path.stat().st_mtime_ns,
                 metadata.stat().st_mtime_ns if metadata.exists() else None)
