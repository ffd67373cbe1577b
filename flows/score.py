"""score-folder: every image file under a folder → a Parquet prediction table."""

import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, unmapped
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.files import PARALLEL_FROM, Files, start_readers
from tasks.inference import load_scoring_model
from tasks.modelfiles import resolve_model
from tasks.paths import get_paths
from tasks.progress import progress
from tasks.report import publish_scoring_report, tag_run
from tasks.score import (
    check_drift, find_images, score_images, scoring_sink, select_unscored, write_predictions)
from tasks.settings import ScoreSettings
from tasks.store import check_writable, read_json


def preset_tag(model_path: Path) -> list[str]:
    """preset:<name> for a model digitflow trained (its metadata.json says); none otherwise."""
    metadata = read_json(model_path.parent / "metadata.json") or {}
    return [f"preset:{metadata['preset']}"] if "preset" in metadata else []


def score_run_name() -> str:
    folder = Path(flow_run.parameters["folder"]).name or "folder"
    return f"score-{folder}-{datetime.now(timezone.utc):%Y-%m-%d}"


def default_chunk_size() -> int:
    """Here a chunk is read by every reader process, a piece at a time (tasks.score.PIECE), so
    chunks are large: fewer Prefect task runs, each costing the flow and the server CPU
    (docs/BENCHMARKS.md). On Dask a chunk is one worker's task: several for each worker."""
    on_dask = not isinstance(FlowRunContext.get().task_runner, ThreadPoolTaskRunner)
    return 2_000 if on_dask else 10_000


DEFAULTS = {name: field.default for name, field in ScoreSettings.model_fields.items()}


# Two chunks in flight: each task reads its next piece while it predicts one. Unbounded, every
# chunk of a large folder would be decoded at once and memory would grow with it.
@flow(name="score-folder", flow_run_name=score_run_name, task_runner=ThreadPoolTaskRunner(max_workers=2))
def score_folder(
    folder: Path,
    output: Path | None = DEFAULTS["output"],
    model: Path | None = DEFAULTS["model"],
    labels: Path | None = DEFAULTS["labels"],
    dataset: Path | None = DEFAULTS["dataset"],
    chunk_size: int | None = DEFAULTS["chunk_size"],
) -> dict:
    settings = ScoreSettings(**locals())  # the parameters above (all there is so far), validated
    started = time.perf_counter()
    paths = get_paths()
    settings = settings.under(paths.root)
    run_id = str(flow_run.id)
    sink = scoring_sink(paths, settings)
    check_writable(sink.folder)  # before the work, not after

    # Load: the reader processes start while the model loads (a small folder is read in-process)
    found = find_images(folder=settings.folder)
    if len(found) >= PARALLEL_FROM:
        start_readers()
    model_path = resolve_model(paths, settings.model)
    version = load_scoring_model(model_path).version
    files = select_unscored(files=Files(found), sink=sink, version=version)
    # Score: thousands of images per task, never one task per image
    size = settings.chunk_size or default_chunk_size()
    starts = range(0, len(files), size)
    chunks = [Files(files[i:i + size]) for i in starts]
    futures = score_images.map(chunks, model_path=unmapped(model_path), first=starts,
                               part=[sink.part(run_id, i) for i in starts])
    chunks = []
    with progress(len(files), f"scoring {len(files)} images") as advance:
        for future in as_completed(futures):
            chunks.append(future.result())
            advance(len(chunks[-1].table) - chunks[-1].shown)  # on Dask, the whole chunk now
    # Write
    summary = write_predictions(chunks=chunks, sink=sink, labels=settings.labels)
    # Compare with the champion's reference; over threshold, ask for a review (an event)
    drift = check_drift(chunks=chunks, model_path=model_path, sink=sink, folder=settings.folder,
                        run_id=run_id)
    # Report
    summary |= {"drift": drift, "output": str(sink.location), "folder": str(settings.folder),
                "found": len(found), "skipped": len(found) - len(files), "model_path": str(model_path),
                "model_version": version,
                "run_id": run_id, "seconds": round(time.perf_counter() - started, 2)}
    publish_scoring_report(summary=summary)
    tag_run(tags=[f"model:{summary['model_version']}", *preset_tag(model_path)])
    return summary


if __name__ == "__main__":
    print(score_folder(folder=Path("data/demo"), output=None, model=None))
