"""Housekeeping for artifacts/ (`digitflow prune`): what digitflow recomputes when it needs it
goes; what it cannot recompute stays. Never pruned: a model version that was ever champion (or
is the latest), champion.json and promotions.jsonl, the prediction tables and datasets, and
data/ (your spans are the only copy of your labels)."""

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tasks.paths import Paths
from tasks.store import read_json

DAY = 86400


@dataclass
class Pruned:
    removed: list[str] = field(default_factory=list)  # relative to the root
    freed_bytes: int = 0
    kept_versions: list[str] = field(default_factory=list)  # were ever champion, or the latest


def kept_versions(paths: Paths) -> set[str]:
    """Every version promotions.jsonl names (rollback needs them), the champion and the latest."""
    history = paths.promotions.read_text().splitlines() if paths.promotions.exists() else []
    versions = {json.loads(line)["model_version"] for line in history if line.strip()}
    for pointer in (paths.champion, paths.latest_model):
        versions.add((read_json(pointer) or {}).get("model_version"))
    return versions - {None}


def recomputed(paths: Paths) -> list[Path]:
    """What digitflow makes again when it is gone: normalized arrays, your prepared pictures,
    the step cache (every step then reruns once), sweep trials, versions never champion."""
    found = [entry for folder in (paths.normalized, paths.prepared_labels, paths.cache,
                                  paths.sweeps / "trials") if folder.is_dir()
             for entry in folder.iterdir()]
    keep = kept_versions(paths)
    if paths.models.is_dir():
        found += [v for v in paths.models.iterdir() if v.is_dir() and not v.name.startswith(".")
                  and v.name not in keep]
    return sorted(found + list(paths.artifacts.glob(".pruning-*")))  # and a killed prune's rest


def newest_change(path: Path) -> float:
    """The latest mtime of `path` and everything under it."""
    if not path.is_dir():
        return path.lstat().st_mtime
    times = [path.lstat().st_mtime]
    for folder, _, files in os.walk(path):
        times += [os.lstat(os.path.join(folder, name)).st_mtime for name in files]
    return max(times)


def size_of(path: Path) -> int:
    if not path.is_dir():
        return path.lstat().st_size
    return sum(os.lstat(os.path.join(folder, name)).st_size
               for folder, _, files in os.walk(path) for name in files)


def prune(paths: Paths, older_than_days: float = 7, dry_run: bool = False) -> Pruned:
    """Remove what `recomputed` lists and nothing changed for `older_than_days`: a run going on
    now (its checkpoint, the model it is gating) is never touched."""
    cutoff = time.time() - older_than_days * DAY
    result = Pruned(kept_versions=sorted(kept_versions(paths)))
    for path in recomputed(paths):
        if newest_change(path) > cutoff:
            continue
        result.removed.append(str(path.relative_to(paths.root)))
        result.freed_bytes += size_of(path)
        if not dry_run:
            # Moved out of sight first: a reader finds a whole entry or none, never half of one.
            hidden = paths.artifacts / f".pruning-{uuid.uuid4().hex[:8]}"
            os.rename(path, hidden)
            if hidden.is_dir():
                shutil.rmtree(hidden)
            else:
                hidden.unlink()
    return result
