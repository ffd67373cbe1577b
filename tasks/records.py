"""What the steps hand each other: small frozen records with names, not nested dicts.

A `StepRecord` is what `tasks.store.cached_step` returns: the files a step wrote (with the size,
SHA-256 and stamp the cache checks them by) and the small facts it recorded. The domain records
on top say what a step made. All of them are plain dataclasses: they pickle for Dask and turn into
the manifests' JSON, and importing this module loads nothing heavy.
"""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    stamp: list[int] | None = None  # see tasks.store.stamp


@dataclass(frozen=True)
class StepRecord:
    files: dict[str, FileEntry]
    info: dict = field(default_factory=dict)  # small JSON-able facts the step recorded
    cached: bool = False  # not stored: whether this call reused the manifest
    seconds: float = 0.0  # not stored: how long this call took

    def path(self, name: str) -> Path:
        return Path(self.files[name].path)

    def paths(self) -> dict[str, Path]:
        return {name: Path(entry.path) for name, entry in self.files.items()}

    def to_json(self) -> dict:
        return {"files": {name: vars(entry) for name, entry in self.files.items()}, **self.info}

    @classmethod
    def from_json(cls, record: dict, cached: bool = False, seconds: float = 0.0) -> "StepRecord":
        files = {name: FileEntry(**entry) for name, entry in record["files"].items()}
        info = {k: v for k, v in record.items() if k != "files"}
        return cls(files=files, info=info, cached=cached, seconds=seconds)


@dataclass(frozen=True)
class MnistCopy:
    """A verified (or explicitly allowed) copy of MNIST in data/raw."""
    path: str
    fingerprint: str  # of all four arrays
    verified: bool
    source: str
    test_set: str  # fingerprint of the test images and labels: what the gate compares on


@dataclass(frozen=True)
class Normalized:
    """The training and test arrays as the models read them (float32 in [0, 1])."""
    key: str
    step: StepRecord

    @property
    def arrays(self) -> Path:
        return self.step.path("arrays")


@dataclass(frozen=True)
class TrainedModel:
    """A model version on disk and what made it.

    `preset` is the preset trained, or None for a model a sweep trial made; `architecture` names
    the network either way ("seed", "dense 256-64").
    """
    version: str
    preset: str | None
    architecture: str
    settings: dict  # everything that decided the weights: the training step's cache key
    train_images: int
    params: int
    epochs_run: int
    fit_seconds: float
    step: StepRecord
    spans: tuple[str, ...] = ()  # your labelled spans it was trained on

    @classmethod
    def from_step(cls, step: StepRecord) -> "TrainedModel":
        """The model a training (or sweep-trial) step recorded."""
        info = step.info
        return cls(version=info["version"], preset=info["preset"],
                   architecture=info["architecture"], settings=info["fit_settings"],
                   train_images=info["train_images"], params=info["params"],
                   epochs_run=info["epochs_run"], fit_seconds=info["fit_seconds"], step=step,
                   spans=tuple(info.get("spans", ())))

    @property
    def model_path(self) -> Path:
        return self.step.path("model")

    @property
    def folder(self) -> Path:
        return self.model_path.parent

    @property
    def history_path(self) -> Path:
        return self.step.path("history")

    @property
    def summary_path(self) -> Path:
        return self.step.path("summary")


@dataclass(frozen=True)
class Evaluation:
    """One model's metrics on one test set."""
    key: str
    version: str
    test_set: str
    accuracy: float
    loss: float
    images: int
    per_class: list[dict]  # digit, precision, recall, f1, support
    step: StepRecord | None = None  # the files (metrics, per-class, confusion, predictions)
    name: str = "mnist"  # which test set: "mnist" or "yours"
    confusion: list[list[int]] | None = None  # [true][predicted] counts

    @property
    def confusion_path(self) -> Path:
        return self.step.path("confusion")

    @property
    def predictions_path(self) -> Path:
        return self.step.path("predictions")


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    test_set: str  # MNIST's
    challenger: str
    challenger_accuracy: float
    challenger_loss: float | None
    champion: str | None = None
    champion_accuracy: float | None = None
    champion_loss: float | None = None
    decided_by: str = "MNIST's test set"  # or "your test set", or "both test sets"
    your_test_set: str | None = None  # with spans: your test set's fingerprint
    challenger_your_accuracy: float | None = None
    champion_your_accuracy: float | None = None


@dataclass(frozen=True)
class Trial:
    """One sweep trial: its grid point's model and how it did on the validation split."""
    number: int
    trained: TrainedModel
    val_accuracy: float
    val_loss: float
    train_accuracy: float
    process: str  # host:pid where it ran (which Dask worker)


@dataclass(frozen=True)
class EvaluationSet:
    """Test images a model is measured on: MNIST's, or your own labelled ones."""
    name: str  # "mnist" or "yours"
    fingerprint: str  # of the images and labels: what makes two measurements comparable
    key: str  # the cache key of the step that wrote the arrays
    x: Path  # an .npz holding x_test (MNIST's normalized arrays), or an .npy
    y: Path

    def load(self):
        """(x, y) as numpy arrays."""
        import numpy as np

        if self.x.suffix == ".npz":
            with np.load(self.x, allow_pickle=False) as npz:
                return npz["x_test"], npz["y_test"]
        return np.load(self.x, allow_pickle=False), np.load(self.y, allow_pickle=False)


@dataclass(frozen=True)
class YourDigits:
    """Every labelled span, taken in and prepared: your training pictures and your test set."""
    key: str
    spans: tuple[str, ...]
    train_images: int
    test_images: int
    summaries: tuple[str, ...]  # a line per span: pictures per digit, broken, duplicates
    conflicts: tuple[str, ...]  # the same picture with two labels: left out
    broken: tuple[str, ...]  # span/path: why
    test_set: EvaluationSet
    step: StepRecord
