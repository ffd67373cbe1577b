"""Every location digitflow reads or writes, derived from one root folder.

The root is `$DIGITFLOW_ROOT`, or the current directory: a checkout of this repository is a
ready-made root. Nothing here touches the disk; callers create folders when they write.
"""

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def downloads(self) -> Path:
        return self.data / "downloads"

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    @property
    def labelled(self) -> Path:
        return self.data / "labelled"

    @property
    def raw_mnist(self) -> Path:
        return self.raw / "mnist.npz"

    @property
    def demo_images(self) -> Path:
        return self.data / "demo"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def cache(self) -> Path:
        """Manifests of finished steps, named after the content key of their inputs."""
        return self.artifacts / "cache"

    @property
    def normalized(self) -> Path:
        return self.artifacts / "normalized"

    @property
    def models(self) -> Path:
        return self.artifacts / "models"

    @property
    def latest_model(self) -> Path:
        return self.models / "latest.json"

    @property
    def champion(self) -> Path:
        return self.models / "champion.json"

    @property
    def promotions(self) -> Path:
        return self.models / "promotions.jsonl"

    @property
    def sweeps(self) -> Path:
        """Sweep trial tables, and under trials/ every trial's model (the best one is copied
        into models/ when the sweep registers it)."""
        return self.artifacts / "sweeps"

    @property
    def prepared_labels(self) -> Path:
        """Your labelled pictures as model inputs, one folder per set of spans (by content)."""
        return self.artifacts / "labelled"

    @property
    def predictions(self) -> Path:
        return self.artifacts / "predictions"


def get_paths() -> Paths:
    return Paths(Path(os.environ.get("DIGITFLOW_ROOT", ".")).resolve())
