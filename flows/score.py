"""score-folder: every image file under a folder → a Parquet prediction table."""

import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, unmapped
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.files import Files, start_readers
from tasks.paths import get_paths
from tasks.progress import progress
from tasks.registry import read_pointer, resolve_model
from tasks.report import publish_scoring_report, tag_run
from tasks.score import (
    dataset_part, default_output, find_images, load_scoring_model, score_images, select_unscored,
    write_predictions)
from tasks.settings import ScoreSettings
from tasks.store import check_writable


def preset_tag(model_path: Path) -> list[str]:
    """preset:<name> for a model digitflow trained (its metadata.json says); none otherwise."""
    metadata = read_pointer(model_path.parent / "metadata.json") or {}
    return [f"preset:{metadata['preset']}"] if "preset" in metadata else []


def score_run_name() -> str:
    folder = Path(flow_run.parameters["folder"]).name or "folder"
    return f"score-{folder}-{datetime.now(timezone.utc):%Y-%m-%d}"


# Two chunks in flight: one being read by the worker processes while the other is predicted.
# Unbounded, every chunk of a large folder would be decoded at once and memory would grow with it.
@flow(name="score-folder", flow_run_name=score_run_name, task_runner=ThreadPoolTaskRunner(max_workers=2))
def score_folder(
    folder: Path,
    output: Path | None = None,
    model: Path | None = None,
    labels: Path | None = None,
    dataset: Path | None = None,
    chunk_size: int = 2000,
) -> dict:
    started = time.perf_counter()
    settings = ScoreSettings(folder=folder, output=output, model=model, labels=labels,
                             dataset=dataset, chunk_size=chunk_size)
    paths = get_paths()
    run_id = str(flow_run.id)
    output = None if settings.dataset else settings.output or default_output(paths, settings.folder)
    check_writable(settings.dataset or output.parent)  # before the work, not after

    # Load: the reader processes start while the model loads and the folder is listed
    start_readers()
    model_path = resolve_model(paths, settings.model)
    version = load_scoring_model(model_path)[1]
    found = find_images(folder=settings.folder)
    files = select_unscored(files=Files(found), dataset=settings.dataset, model_path=model_path) \
        if settings.dataset else found
    # Score: a few thousand images per task, never one task per image
    starts = range(0, len(files), settings.chunk_size)
    chunks = [Files(files[i:i + settings.chunk_size]) for i in starts]
    parts = [dataset_part(settings.dataset, run_id, i) if settings.dataset else None for i in starts]
    futures = score_images.map(chunks, model_path=unmapped(model_path), first=starts, part=parts)
    frames = []
    with progress(len(files), f"scoring {len(files)} images") as advance:
        for future in as_completed(futures):
            frames.append(future.result())
            advance(len(frames[-1]))
    # Write
    summary = write_predictions(frames=frames, output=output, labels=settings.labels)
    # Report
    summary |= {"output": str(settings.dataset or output), "folder": str(settings.folder),
                "found": len(found), "skipped": len(found) - len(files), "model_path": str(model_path),
                "model_version": version,
                "run_id": run_id, "seconds": round(time.perf_counter() - started, 2)}
    publish_scoring_report(summary=summary)
    tag_run(tags=[f"model:{summary['model_version']}", *preset_tag(model_path)])
    return summary


if __name__ == "__main__":
    print(score_folder(folder=Path("data/demo"), output=None, model=None))
