"""review-digits against a real server, answered as a person does: the run pauses, its page's
Resume button opens the form, a few drop-downs are set in headless Chromium, Submit; the labels
become a span and the event digitflow.labels.added is emitted. And a review nobody answers."""

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from support import REPO, api_client, choose, write_pngs
from tasks.labels import list_spans, take_in
from tasks.store import file_sha256
from test_review import bars, row

pytestmark = pytest.mark.slow


@pytest.fixture
def scored_root(tmp_path: Path) -> Path:
    """A digitflow root with four pictures in data/inbox and their scored table: three flagged."""
    root = tmp_path / "root"
    folder = root / "data" / "inbox"
    paths = write_pngs(folder, bars(4), size=56)
    rows = [row(p.name, folder, c, review=c < 0.9) for p, c in zip(paths, (0.3, 0.4, 0.5, 0.95))]
    table = root / "artifacts" / "predictions" / "inbox.parquet"
    table.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(table, index=False)
    return root


def start_review(root: Path, server: dict, tag: str, **params) -> subprocess.Popen:
    """review_digits run to the end in its own process, as a script would; it prints the result
    as JSON on its last line. The tag finds its run among the session's others."""
    code = ("import json, sys; from pathlib import Path; from prefect import tags; "
            "from flows.review import review_digits\n"
            f"with tags({tag!r}):\n"
            f"    result = review_digits(source=Path('artifacts/predictions/inbox.parquet'), "
            f"folder=Path('data/inbox'), **{params!r})\n"
            "print(json.dumps(result))")
    env = {**server["env"], "DIGITFLOW_ROOT": str(root)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def result_of(review: subprocess.Popen, timeout: int = 180) -> dict:
    out, _ = review.communicate(timeout=timeout)
    assert review.returncode == 0, out[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def paused_run(api: str, tag: str, review: subprocess.Popen, timeout: int = 180):
    """The tagged flow run once it is PAUSED (its form saved)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with api_client(api) as client:
        for _ in range(timeout):
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
            if runs and runs[0].state.is_paused():
                return runs[0]
            if review.poll() is not None:
                pytest.fail(f"the review ended before pausing:\n{review.stdout.read()[-3000:]}")
            time.sleep(1)
    review.kill()
    pytest.fail(f"the review run did not pause within {timeout} s")


def answer_form(browser, url: str, run, answers: dict[str, str], shots: Path) -> None:
    """As a person: the run's page, Resume, a choice in each named field's drop-down, Submit.
    Screenshots {shots}-form.png (as it opened) and {shots}-filled.png."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{url}/runs/flow-run/{run.id}", wait_until="networkidle", timeout=90_000)
    page.get_by_role("button", name="Resume").click()
    form = page.get_by_role("dialog")
    # What to do, where a person sees it: in the first field (the form's own description is
    # squeezed out of sight once the fields overflow the dialog).
    first = form.locator(".schema-form-property").first
    expect(first.get_by_text("Pick the digit each picture shows")).to_be_in_viewport()
    images = form.locator('img[src^="data:image/png"]')
    expect(images).to_have_count(6)  # each picture and the model's input
    page.wait_for_function("[...document.querySelectorAll('[role=dialog] img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=f"{shots}-form.png")
    for title, choice in answers.items():
        choose(page, form.locator(".schema-form-property").filter(has_text=title), choice)
    page.screenshot(path=f"{shots}-filled.png")
    form.get_by_role("button", name="Submit").click()
    expect(form).to_have_count(0)
    page.close()


def labels_added_events(api: str, span: str) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with api_client(api) as client:
        # limit: the client's default (100) is more than the 3.9.1 server accepts (50).
        return client.read_events(filter=EventFilter(
            event=EventNameFilter(name=["digitflow.labels.added"]),
            resource=EventResourceFilter(id=[f"digitflow.labels.{span}"])), limit=50).events


def test_a_person_labels_pictures_in_the_form_and_they_become_a_span(prefect_server, browser,
                                                                     scored_root, tmp_path):
    api, tag = prefect_server["env"]["PREFECT_API_URL"], f"test-{uuid.uuid4().hex[:8]}"
    review = start_review(scored_root, prefect_server, tag, limit=24, timeout=600, span="from-ui")
    run = paused_run(api, tag, review)
    # Least confident first: 00000.png, 00001.png, 00002.png (00003.png is not flagged).
    answer_form(browser, prefect_server["url"], run,
                {"1 of 3: 00000.png": "3", "2 of 3: 00001.png": "not a digit",
                 "3 of 3: 00002.png": "7"},
                tmp_path / "review")
    result = result_of(review)
    assert result["span"] == "from-ui" and result["pictures"] == 2
    assert (result["skipped"], result["not_a_digit"]) == (0, 1)
    span = take_in(scored_root / "data" / "labelled" / "from-ui")
    folder = scored_root / "data" / "inbox"
    assert {(f.path, f.label, f.sha256) for f in span.files} == {
        ("00000.png", 3, file_sha256(folder / "00000.png")),
        ("00002.png", 7, file_sha256(folder / "00002.png"))}
    events = []
    for _ in range(30):  # events are written by the server a moment after they arrive
        if events := labels_added_events(api, "from-ui"):
            break
        time.sleep(1)
    assert [e.payload for e in events] == [{"span": "from-ui", "pictures": 2,
                                            "flow_run_id": str(run.id)}]
    assert f"prefect.flow-run.{run.id}" in {r.id for r in events[0].related}
    with api_client(api) as client:
        assert client.read_flow_run(run.id).state.is_completed()
    assert (tmp_path / "review-filled.png").stat().st_size > 10_000


def test_a_review_nobody_answers_times_out_and_leaves_the_queue_as_it_was(prefect_server,
                                                                          scored_root):
    api, tag = prefect_server["env"]["PREFECT_API_URL"], f"test-{uuid.uuid4().hex[:8]}"
    review = start_review(scored_root, prefect_server, tag, limit=24, timeout=5)
    run = paused_run(api, tag, review)
    result = result_of(review)
    assert result["timed_out"] is True and result["span"] is None and result["queued"] == 3
    assert list_spans(scored_root / "data" / "labelled") == []
    with api_client(api) as client:
        # Not Failed ("never resumed"), which the server would make of it otherwise.
        assert client.read_flow_run(run.id).state.is_completed()
