"""Operations as a team runs them: a real server, a process worker, deployments from
prefect.yaml (which `prefect deploy` must accept), and the run pages looked at in a real browser."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, new_root, prefect
from tasks.demo import make_demo_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def team(tmp_path_factory, mnist_npz, prefect_server):
    """The server plus a work pool, both deployments and a worker (stopped after).

    The worker runs flows in this checkout (the pull step) but writes under a throwaway root.
    """
    root = new_root(tmp_path_factory.mktemp("root"), mnist_npz)
    env = {**prefect_server["env"], "DIGITFLOW_ROOT": str(root), "PWD": str(REPO)}
    prefect(env, "work-pool", "create", "digitflow", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--all")
    # The schedules are real (03:00 UTC, every 15 min): paused before the worker starts, so a
    # scheduled run cannot land between the test's own runs. Pausing deletes queued auto runs.
    prefect(env, "--no-prompt", "deployment", "schedule", "pause", "--all")
    with open(prefect_server["home"] / "worker.log", "w") as log:
        worker = subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "digitflow"],
                                  env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield {**prefect_server, "env": env, "root": root}
        finally:
            worker.terminate()
            worker.wait(timeout=60)


def run_deployment(team: dict, name: str, **params) -> None:
    args = [arg for k, v in params.items() for arg in ("--param", f"{k}={v}")]
    out = prefect(team["env"], "deployment", "run", name, *args, "--watch", timeout=600)
    assert "Completed" in out, out[-2000:]


def champion(team: dict) -> str:
    return json.loads((team["root"] / "artifacts/models/champion.json").read_text())["model_version"]


def test_prefect_deploy_accepted_both_deployments(team):
    listed = prefect(team["env"], "deployment", "ls")
    assert "train-digits/retrain-nightly" in listed and "score-folder/score-inbox" in listed
    nightly = prefect(team["env"], "deployment", "inspect", "train-digits/retrain-nightly")
    assert "0 3 * * *" in nightly and str(REPO) in nightly  # schedule; runs in this checkout


@pytest.fixture(scope="module")
def retrained(team):
    run_deployment(team, "train-digits/retrain-nightly", epochs=1, limit=3000)
    return champion(team)


def test_retrain_through_the_worker_promotes_and_a_worse_one_is_gated(team, retrained):
    assert (team["root"] / "artifacts/models" / retrained / "model.keras").is_file()
    run_deployment(team, "train-digits/retrain-nightly", epochs=1, limit=300)
    assert champion(team) == retrained  # the worse challenger did not replace it
    versions = json.loads(subprocess.run(
        [BIN / "digitflow", "models"], env=team["env"], capture_output=True, text=True,
        check=True).stdout.splitlines()[-1])["models"]
    assert len(versions) == 2 and [v["champion"] for v in versions] == [True, False]


@pytest.fixture(scope="module")
def scored(team, retrained, mnist):
    inbox = team["root"] / "inbox"
    make_demo_folder(mnist["x_test"][:40], mnist["y_test"][:40], inbox, count=40, seed=7)
    dataset = team["root"] / "inbox-predictions"
    run_deployment(team, "score-folder/score-inbox", folder=inbox, dataset=dataset)
    return dataset


def test_scoring_through_the_worker_appends_to_the_dataset(team, scored, retrained):
    import pyarrow.parquet as pq

    table = pq.read_table(scored).to_pandas()
    assert len(table) == 43 and (table["model_version"] == retrained).all()
    assert (table["status"] == "error").sum() == 3


def flow_run_artifacts(team: dict, flow_name: str) -> list:
    """The first finished deployment run of the flow and its artifacts (other tests share the
    server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterFlowRunId, FlowFilter, FlowFilterName)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: team["env"]["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
            first = min((r for r in runs if r.state.is_completed() and r.deployment_id),
                        key=lambda r: r.start_time)
            return first, client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[first.id])))


@pytest.fixture(scope="module")
def browser():
    if not Path("/usr/bin/chromium").exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("needs Debian's chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


def rendered_images(browser, url: str, screenshot: Path) -> list[dict]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="networkidle", timeout=90_000)
    page.wait_for_function("document.querySelectorAll('img[src^=\"data:image/png\"]').length > 0",
                           timeout=60_000)
    time.sleep(1)  # let the last images decode
    height = page.evaluate("Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))")
    page.set_viewport_size({"width": 1400, "height": min(int(height), 12_000)})
    page.screenshot(path=str(screenshot), full_page=True)
    images = page.evaluate("""[...document.querySelectorAll('img[src^="data:image/png"]')]
        .map(i => ({alt: i.alt, width: i.naturalWidth, complete: i.complete}))""")
    page.close()
    return images


def test_training_report_renders_its_plots_in_a_browser(team, retrained, browser, tmp_path):
    run, artifacts = flow_run_artifacts(team, "train-digits")
    assert run.name.startswith("train-seed-")
    report = next(a for a in artifacts if a.type == "markdown")
    images = rendered_images(browser, f"{team['url']}/artifacts/artifact/{report.id}",
                             tmp_path / "training-report.png")
    assert sorted(i["alt"] for i in images) == ["confusion", "curves", "misclassified"]
    assert all(i["width"] > 0 for i in images), images
    assert (tmp_path / "training-report.png").stat().st_size > 10_000


def test_scoring_report_shows_a_review_gallery_in_a_browser(team, scored, browser, tmp_path):
    run, artifacts = flow_run_artifacts(team, "score-folder")
    assert run.name.startswith("score-inbox-")
    kinds = {a.type for a in artifacts}
    assert {"markdown", "progress"} <= kinds
    report = next(a for a in artifacts if a.type == "markdown")
    images = rendered_images(browser, f"{team['url']}/artifacts/artifact/{report.id}",
                             tmp_path / "scoring-report.png")
    assert len(images) == 32  # 16 doubtful predictions: the picture and what the model saw
    assert all(i["width"] > 0 for i in images), images
