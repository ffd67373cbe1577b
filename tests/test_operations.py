"""Operations as a team runs them: a real server, a process worker, deployments from
prefect.yaml (which `prefect deploy` must accept), the run pages looked at in a real browser, and
`make serve` / `make stop` as a person types them."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from support import BIN, REPO, api_client, free_port, new_root, prefect, run_artifacts
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
    # The event triggers too (labels -> retrain, promotion -> rescore, drift -> review): the
    # test's runs stay the only ones; test_the_loop_s_triggers_are_deployed checks they exist.
    with api_client(env["PREFECT_API_URL"]) as client:
        automations = client.read_automations()
        for automation in automations:
            client.pause_automation(automation.id)
    with open(prefect_server["home"] / "worker.log", "w") as log:
        worker = subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "digitflow"],
                                  env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            yield {**prefect_server, "env": env, "root": root, "automations": automations}
        finally:
            # It may ignore SIGTERM (its log then says it passed SIGINT on to its worker process,
            # which stays), as `make stop` finds too: after 10 s its whole group is killed.
            worker.terminate()
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


def run_deployment(team: dict, name: str, **params) -> None:
    args = [arg for k, v in params.items() for arg in ("--param", f"{k}={v}")]
    out = prefect(team["env"], "deployment", "run", name, *args, "--watch", timeout=600)
    assert "Completed" in out, out[-2000:]


def champion(team: dict) -> str:
    return json.loads((team["root"] / "artifacts/models/champion.json").read_text())["model_version"]


def inspect(env: dict, deployment: str) -> dict:
    # Read through the API: `prefect deployment inspect --output json` fails in 3.9.1 on a
    # deployment with triggers ("Type is not JSON serializable: set").
    with api_client(env["PREFECT_API_URL"]) as client:
        return client.read_deployment_by_name(deployment).model_dump(mode="json")


def test_prefect_deploy_accepted_both_deployments(team):
    listed = prefect(team["env"], "deployment", "ls")
    assert "train-digits/retrain-nightly" in listed and "score-folder/score-inbox" in listed
    assert "review-digits/review-queue" in listed
    nightly = inspect(team["env"], "train-digits/retrain-nightly")
    inbox = inspect(team["env"], "score-folder/score-inbox")
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 3 * * *"]
    assert [s["schedule"]["interval"] for s in inbox["schedules"]] == [900]
    assert str(REPO) in json.dumps(nightly["pull_steps"])  # runs in this checkout
    limits = [d["global_concurrency_limit"]["limit"] for d in (nightly, inbox)]
    assert limits == [1, 1]  # one run at a time per deployment


def test_the_loop_s_triggers_are_deployed(team):
    """prefect.yaml's triggers became automations: each event starts the deployment it names."""
    from prefect.events.actions import RunDeployment

    with api_client(team["env"]["PREFECT_API_URL"]) as client:
        deployments = {d.id: f"{d.name}" for d in client.read_deployments()}
    started_by = {tuple(a.trigger.expect): deployments[a.actions[0].deployment_id]
                  for a in team["automations"] if isinstance(a.actions[0], RunDeployment)}
    assert started_by == {("digitflow.labels.added",): "retrain-nightly",
                          ("digitflow.model.promoted",): "score-inbox",
                          ("digitflow.scoring.drift",): "review-queue"}


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
    runs = deployment_runs(team, "train-digits")
    gates = [{"promoted", "not-promoted"} & set(r.tags) for r in runs]
    assert gates == [{"promoted"}, {"not-promoted"}]  # the runs' tags say what the gate decided


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


def deployment_runs(team: dict, flow_name: str) -> list:
    """The flow's completed deployment runs, oldest first (other tests share the server)."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with api_client(team["env"]["PREFECT_API_URL"]) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return sorted((r for r in runs if r.state.is_completed() and r.deployment_id),
                  key=lambda r: r.start_time)


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


PNGS = """document.querySelectorAll('img[src^="data:image/png"]')"""


def report_from_run_page(browser, url: str, run, report, shots: Path) -> list[dict]:
    """As a person finds it: the run's page, its Artifacts tab, then the report listed there.
    The report's PNG images as the browser decoded them; screenshots {shots}-run.png, -report.png.
    """
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{url}/runs/flow-run/{run.id}", wait_until="networkidle", timeout=90_000)
    expect(page.get_by_text(run.name, exact=True).first).to_be_visible(timeout=60_000)
    page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
    listed = page.locator(f'a[href="/artifacts/artifact/{report.id}"]')
    expect(listed).to_contain_text(report.key, timeout=60_000)
    listed.scroll_into_view_if_needed()
    page.screenshot(path=f"{shots}-run.png")

    listed.click()
    page.wait_for_url(f"**/artifacts/artifact/{report.id}")
    page.wait_for_function(f"[...{PNGS}].length > 0 && [...{PNGS}].every(i => i.complete)")
    # The app scrolls inside its own panel: a viewport as tall as the page shows all of it.
    height = page.evaluate("Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))")
    page.set_viewport_size({"width": 1400, "height": min(int(height), 12_000)})
    page.screenshot(path=f"{shots}-report.png", full_page=True)
    images = page.evaluate(f"[...{PNGS}].map(i => ({{alt: i.alt, width: i.naturalWidth}}))")
    page.close()
    return images


def test_training_report_renders_its_plots_in_a_browser(team, retrained, browser, tmp_path):
    run = deployment_runs(team, "train-digits")[0]
    assert run.name.startswith("train-seed-")
    report = next(a for a in run_artifacts(run.id, team["env"]["PREFECT_API_URL"]) if a.type == "markdown")
    images = report_from_run_page(browser, team["url"], run, report, tmp_path / "training")
    assert sorted(i["alt"] for i in images) == ["confusion", "curves", "misclassified",
                                                "reliability"]
    assert all(i["width"] > 0 for i in images), images
    assert (tmp_path / "training-report.png").stat().st_size > 10_000


def test_scoring_report_shows_a_review_gallery_in_a_browser(team, scored, browser, tmp_path):
    run = deployment_runs(team, "score-folder")[0]
    assert run.name.startswith("score-inbox-")
    artifacts = run_artifacts(run.id, team["env"]["PREFECT_API_URL"])
    assert {"markdown", "progress"} <= {a.type for a in artifacts}
    report = next(a for a in artifacts if a.type == "markdown")
    images = report_from_run_page(browser, team["url"], run, report, tmp_path / "scoring")
    gallery = [i for i in images if i["alt"] != "drift"]
    assert len(gallery) == 32  # 16 doubtful predictions: the picture and what the model saw
    assert [i["alt"] for i in images if i["alt"] == "drift"] == ["drift"]  # the drift chart
    assert all(i["width"] > 0 for i in images), images


def running(pid: int) -> bool:
    """The process exists and is no zombie (where nothing reaps orphans, a stopped one lingers)."""
    try:
        return ") Z " not in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except ConnectionRefusedError:
        return False


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def serve_dir():
    """`make serve`'s .serve/ in this checkout. After the test, `make stop` (a failed test leaves
    no server running) and the folder removed if the test made it. Skipped while someone's
    `make serve` runs here: this `make stop` would end theirs."""
    serve = REPO / ".serve"
    if list(serve.glob("*.pid")):
        pytest.skip("make serve runs in this checkout (.serve/*.pid): make stop first")
    made = not serve.exists()
    yield serve
    make("stop")
    if made:
        shutil.rmtree(serve, ignore_errors=True)


def first_worker(api_url: str, pool: str, timeout: int = 90):
    """The first worker to show up in the pool (a worker registers once it polls)."""
    with api_client(api_url) as client:
        for _ in range(timeout):
            if workers := client.read_workers_for_work_pool(pool):
                return workers[0]
            time.sleep(1)
    pytest.fail(f"no worker showed up in the work pool {pool} within {timeout} s")


def test_make_serve_deploys_and_starts_a_worker_and_make_stop_ends_them(serve_dir, tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    # A throwaway Prefect home, and a throwaway root for a run that might slip past the pause.
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "DIGITFLOW_ROOT": str(tmp_path)}
    served = make("serve", f"PORT={port}", env=env)
    assert served.returncode == 0, served.stdout[-3000:] + served.stderr[-3000:]

    user = {**env, "PREFECT_API_URL": api}  # a shell after `export PREFECT_API_URL=...`
    # The schedules are real (03:00 UTC, every 15 min): paused before one can fire.
    prefect(user, "--no-prompt", "deployment", "schedule", "pause", "--all")
    listed = prefect(user, "deployment", "ls")
    assert "train-digits/retrain-nightly" in listed and "score-folder/score-inbox" in listed
    assert "review-digits/review-queue" in listed
    pids = [int((serve_dir / f"{name}.pid").read_text()) for name in ("server", "worker")]
    assert all(running(pid) for pid in pids) and first_worker(api, "digitflow")

    stopped = make("stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(running(pid) for pid in pids) and not answers(port)
    assert not list(serve_dir.glob("*.pid"))


def test_make_serve_refuses_a_port_another_server_answers_on(serve_dir, prefect_server):
    port = prefect_server["url"].rsplit(":", 1)[1]
    served = make("serve", f"PORT={port}")
    assert served.returncode != 0 and f"port {port} is in use" in served.stderr
    assert not (serve_dir / "server.pid").exists()  # nothing started, nothing deployed
