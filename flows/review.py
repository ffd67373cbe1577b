"""review-digits: the predictions the model is unsure of → a form on the paused run → a span."""

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run
from prefect.states import Running

from tasks.paths import get_paths
from tasks.review import (answers_to_span, check_new_span, form_description, labels_form,
                          review_locations, review_markdown, review_queue)


# tasks/review.py stays free of Prefect (the CLI exports queues without it): its tasks are here.
@task(name="review-queue", cache_policy=NO_CACHE)
def queue_task(source: Path, labelled: Path, limit: int, folder: Path) -> pd.DataFrame:
    queue = review_queue(source, labelled, limit, folder)
    for note in queue.attrs["notes"]:
        get_run_logger().info(note)
    return queue


span_task = task(name="take-in-labels", cache_policy=NO_CACHE)(answers_to_span)

# How often the paused run asks the server whether the form was submitted (Prefect's default,
# 10 s, makes a person wait that long after Submit).
POLL_SECONDS = 3


def end_pause(message: str) -> None:
    """Take the run out of its expired pause. Otherwise the server turns whatever the run proposes
    next into Failed ("never resumed"): an unanswered review is no failure, so the run goes on."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Running(message=message), force=True)


def review_run_name() -> str:
    source = Path(str(flow_run.parameters["source"])).stem or "queue"
    return f"review-{source}-{datetime.now(timezone.utc):%Y-%m-%d}"


@flow(name="review-digits", flow_run_name=review_run_name)
def review_digits(
    source: Path = Path("artifacts/predictions/inbox"),
    folder: Path = Path("data/inbox"),
    limit: int = 24,
    timeout: int = 3600,
    span: str | None = None,
) -> dict:
    paths = get_paths()
    source, folder = review_locations(paths.root, source, folder)
    name = span or f"review-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{str(flow_run.id)[:8]}"
    check_new_span(paths.labelled, name)
    done = {"source": str(source), "folder": str(folder), "run_id": str(flow_run.id)}

    # Queue: what the model flagged, least confident first, not yet in a span
    queue = queue_task(source=source, labelled=paths.labelled, limit=limit, folder=folder)
    if queue.empty:
        return {**done, "queued": 0, "span": None, "notes": queue.attrs["notes"],
                "message": "nothing to review: no flagged picture outside the spans"}
    # Ask: the run pauses; its page shows Resume, which opens the form
    form = labels_form(queue, folder)
    try:
        answers = pause_flow_run(wait_for_input=form.with_initial_data(
            description=form_description(queue)), timeout=timeout, poll_interval=POLL_SECONDS)
    except FlowPauseTimeout:
        # Nothing was written: the same pictures are queued next time.
        message = f"no answer within {timeout} s: nothing labelled, the queue is as it was"
        end_pause(message)
        create_markdown_artifact(key="review-report", description=message,
                                 markdown=f"# Review of `{source}`\n\n{message}")
        return {**done, "queued": len(queue), "span": None, "timed_out": True, "message": message}
    # Take in: the labelled pictures as a new span
    result = span_task(answers=answers.model_dump(), queue=queue, folder=folder,
                       labelled=paths.labelled, name=name)
    # Tell: the event (a retrain can start on it) and the report
    if result.span:
        emit_event(event="digitflow.labels.added",
                   resource={"prefect.resource.id": f"digitflow.labels.{result.span}"},
                   payload={"span": result.span, "pictures": result.pictures,
                            "flow_run_id": str(flow_run.id)})
    create_markdown_artifact(key="review-report", markdown=review_markdown(result, source, folder),
                             description=result.message)
    return {**done, "queued": len(queue), "notes": queue.attrs["notes"], **result.to_dict()}


if __name__ == "__main__":
    print(review_digits(source=Path("artifacts/predictions/inbox"), folder=Path("data/inbox"),
                        limit=24, timeout=3600, span=None))
