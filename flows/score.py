"""score-folder: every image file under a folder → one Parquet prediction table."""

import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, unmapped
from prefect.futures import as_completed
from prefect.runtime import flow_run

from tasks.paths import get_paths
from tasks.progress import terminal_progress
from tasks.registry import resolve_model
from tasks.report import publish_scoring_report
from tasks.score import find_images, score_images, write_predictions
from tasks.settings import ScoreSettings


def score_run_name() -> str:
    folder = Path(flow_run.parameters["folder"]).name or "folder"
    return f"score-{folder}-{datetime.now(timezone.utc):%Y-%m-%d}"


@flow(name="score-folder", flow_run_name=score_run_name)
def score_folder(
    folder: Path,
    output: Path | None = None,
    model: Path | None = None,
    labels: Path | None = None,
    chunk_size: int = 2000,
) -> dict:
    started = time.perf_counter()
    settings = ScoreSettings(folder=folder, output=output, model=model, labels=labels,
                             chunk_size=chunk_size)
    paths = get_paths()
    output = settings.output or paths.predictions / (
        f"{settings.folder.resolve().name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.parquet")

    # Load
    model_path = resolve_model(paths, settings.model)
    files = find_images(folder=settings.folder)
    # Score: a few thousand images per task, never one task per image
    chunks = [files[i:i + settings.chunk_size] for i in range(0, len(files), settings.chunk_size)]
    futures = score_images.map(chunks, model_path=unmapped(model_path),
                               first=range(0, len(files), settings.chunk_size))
    frames = []
    with terminal_progress(len(files), "scoring") as advance:
        for future in as_completed(futures):
            frames.append(future.result())
            advance(len(frames[-1]))
    # Write
    summary = write_predictions(frames=frames, output=output, labels=settings.labels)
    # Report
    summary |= {"output": str(output), "folder": str(settings.folder),
                "model_version": str(frames[0]["model_version"].iloc[0]) if frames else None,
                "run_id": str(flow_run.id), "seconds": round(time.perf_counter() - started, 2)}
    publish_scoring_report(summary=summary)
    return summary


if __name__ == "__main__":
    print(score_folder(folder=Path("data/demo"), output=None, model=None))
