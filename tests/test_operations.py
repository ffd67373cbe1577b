"""Operations as a team runs them: a real server, a process worker, deployments from
prefect.yaml (which `prefect deploy` must accept), the run pages looked at in a real browser, and
`make serve` / `make stop` as a person types them."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from support import (
    BIN, REPO, api_client, choose, end, free_port, new_root, prefect, run_artifacts, set_parameters)
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
            end(worker, grace=10)


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
    # Housekeeping: the server deletes flow runs that ended more than 90 days ago, and old events
    server_env = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
    assert b"PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED=events,flow_runs" in server_env
    assert f"PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD={90 * 86400}".encode() in server_env

    stopped = make("stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(running(pid) for pid in pids) and not answers(port)
    assert not list(serve_dir.glob("*.pid"))


def postgres_tools() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's postgresql (see .ci/run)")
        pytest.skip("needs Debian's postgresql: apt-get install postgresql")
    return found[-1].parent


def test_make_serve_db_postgres_keeps_the_server_in_its_own_postgresql(serve_dir, tmp_path):
    """`make serve DB=postgres`: initdb into .serve/postgres, the server on it, and `make stop`
    stops PostgreSQL too; a second `make serve` finds what the first one stored."""
    tools = postgres_tools()
    port, pg_port = free_port(), free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "DIGITFLOW_ROOT": str(tmp_path)}
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def stored(sql: str) -> str:
        return subprocess.run([*as_postgres, tools / "psql", "-h", "127.0.0.1", "-p", str(pg_port),
                               "-U", "prefect", "-d", "prefect", "-qtAc", sql], capture_output=True,
                              text=True, check=True).stdout.strip()

    served = make("serve", "DB=postgres", f"PORT={port}", f"PGPORT={pg_port}", env=env)
    assert served.returncode == 0, served.stdout[-3000:] + served.stderr[-3000:]
    prefect({**env, "PREFECT_API_URL": api}, "--no-prompt", "deployment", "schedule", "pause", "--all")
    deployments = "SELECT name FROM deployment ORDER BY name"
    assert stored(deployments).split() == ["retrain-nightly", "review-queue", "score-inbox"]
    assert (serve_dir / "postgres" / "PG_VERSION").exists()

    stopped = make("stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not answers(pg_port) and not answers(port)
    assert not (serve_dir / "postgres" / "postmaster.pid").exists()
    # Started again, the cluster still holds what the server stored
    assert make("postgres", f"PGPORT={pg_port}", env=env).returncode == 0
    assert stored(deployments).split() == ["retrain-nightly", "review-queue", "score-inbox"]


def test_make_serve_refuses_a_port_another_server_answers_on(serve_dir, prefect_server):
    port = prefect_server["url"].rsplit(":", 1)[1]
    served = make("serve", f"PORT={port}")
    assert served.returncode != 0 and f"port {port} is in use" in served.stderr
    assert not (serve_dir / "server.pid").exists()  # nothing started, nothing deployed


# The review loop, end to end: every step after the first scoring is started by an event of the
# step before, through prefect.yaml's automations, and run by the worker.

LOOP_STEP_SECONDS = 900  # per step: a run waits for the worker's poll, then imports TensorFlow


def worker_log_tail(team: dict, lines: int = 60) -> str:
    log = team["home"] / "worker.log"
    text = log.read_text(errors="replace") if log.exists() else "(no worker log)"
    return "\n".join(text.splitlines()[-lines:])


def automation_on(team: dict, event: str):
    return next(a for a in team["automations"] if event in a.trigger.expect)


def started_by(team: dict, event: str) -> list:
    """The flow runs the automation on `event` started, oldest first."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterCreatedBy

    with api_client(team["env"]["PREFECT_API_URL"]) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            created_by=FlowRunFilterCreatedBy(id_=[automation_on(team, event).id])))
    return sorted(runs, key=lambda r: r.created)


def loop_run(team: dict, event: str, what: str, paused: bool = False,
             timeout: int = LOOP_STEP_SECONDS):
    """The first run the automation on `event` started, once Completed (or Paused, with `paused`);
    a failure naming what never happened, with the worker's log, otherwise."""
    deadline, runs = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        if runs := started_by(team, event):
            state = runs[0].state
            if (state.is_paused() if paused else state.is_completed()):
                return runs[0]
            if state.is_final():
                pytest.fail(f"{what}: the run {runs[0].name} ended {state.name} ({state.message})"
                            f"\nthe worker's log ends:\n{worker_log_tail(team)}")
        time.sleep(3)
    happened = (f"the run {runs[0].name} is still {runs[0].state.name}" if runs
                else f"no {event} automation started a run")
    pytest.fail(f"{what} within {timeout} s: {happened}\nthe worker's log ends:\n"
                f"{worker_log_tail(team)}")


def finished(team: dict, run, what: str, timeout: int = LOOP_STEP_SECONDS):
    """The run, re-read once Completed; a failure saying where it stopped otherwise."""
    with api_client(team["env"]["PREFECT_API_URL"]) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = client.read_flow_run(run.id)
            if run.state.is_completed():
                return run
            if run.state.is_final():
                break
            time.sleep(3)
    pytest.fail(f"{what}: the run {run.name} is {run.state.name} ({run.state.message})\n"
                f"the worker's log ends:\n{worker_log_tail(team)}")


def stop_the_loop(team: dict) -> None:
    """The automations paused again, and what they started and is not over cancelled (a review
    left waiting for a person would otherwise outlive the test)."""
    from prefect.states import Cancelled, Cancelling

    with api_client(team["env"]["PREFECT_API_URL"]) as client:
        for automation in team["automations"]:
            client.pause_automation(automation.id)
        for automation in team["automations"]:
            for run in started_by(team, next(iter(automation.trigger.expect))):
                if not run.state.is_final():  # Cancelling: the worker ends the run's process
                    started = run.state.is_running() or run.state.is_paused()
                    client.set_flow_run_state(run.id, Cancelling() if started else Cancelled(),
                                              force=True)


def other_writers_inbox(inbox: Path, scratch: Path, count: int) -> dict[str, int]:
    """The first `count` of the other writers' pictures (tasks.demo) copied into `inbox` at their
    paths; their true digits (path → digit), which stay out of the inbox, as in a person's head."""
    from tasks.demo import make_other_writers_folder

    labels = make_other_writers_folder(scratch).head(count)
    for path in labels["path"]:
        (inbox / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(scratch / path, inbox / path)
    return dict(zip(labels["path"], labels["label"].astype(int)))


FIELD_TITLE = re.compile(r"(\d+) of (\d+): (\S+)")  # tasks.review.labels_form's field titles


def label_in_the_form(browser, url: str, run, truth: dict[str, int], shots: Path) -> dict[str, int]:
    """As a person who knows the digits: the run's page, Resume, every drop-down set to its
    picture's digit, Submit. The answers (path → digit); screenshots {shots}-form.png (as it
    opened) and {shots}-filled.png."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{url}/runs/flow-run/{run.id}", wait_until="networkidle", timeout=90_000)
    page.get_by_role("button", name="Resume").click()
    form = page.get_by_role("dialog")
    fields = form.locator(".schema-form-property")
    expect(fields.first).to_contain_text(FIELD_TITLE)
    queued = int(FIELD_TITLE.search(fields.first.inner_text())[2])
    expect(fields).to_have_count(queued)
    expect(form.locator('img[src^="data:image/png"]')).to_have_count(2 * queued)
    page.wait_for_function("[...document.querySelectorAll('[role=dialog] img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=f"{shots}-form.png")
    answers = {}
    for i in range(queued):
        field = fields.nth(i)
        path = FIELD_TITLE.search(field.inner_text())[3]
        choice = str(truth[path])
        choose(page, field, choice)
        answers[path] = int(choice)
    page.screenshot(path=f"{shots}-filled.png")
    form.get_by_role("button", name="Submit").click()
    expect(form).to_have_count(0)
    page.close()
    return answers


def test_the_review_loop_runs_itself_from_drift_to_rescoring(team, retrained, browser, tmp_path):
    import pyarrow.parquet as pq

    from tasks.labels import split_of, take_in
    from tasks.store import file_sha256

    api, root = team["env"]["PREFECT_API_URL"], team["root"]
    # Where score-inbox's own parameters point (under DIGITFLOW_ROOT): the rescoring a promotion
    # starts, with those parameters, then covers this inbox and dataset.
    inbox, dataset = root / "data" / "inbox", root / "artifacts" / "predictions" / "inbox"
    truth = other_writers_inbox(inbox, tmp_path / "other-writers", count=400)  # ≥ 200 can alarm
    with api_client(api) as client:
        # One quick epoch, and a gate that lets the retrain through so that the loop goes on: the
        # gate's decisions are test_registry's; here it must measure on both test sets.
        set_parameters(client, "train-digits/retrain-nightly", preset="seed", epochs=1,
                       limit=3000, gate_margin=0.5, mnist_tolerance=1.0)
        set_parameters(client, "review-digits/review-queue", limit=16, timeout=600)
        for automation in team["automations"]:
            client.resume_automation(automation.id)
    try:
        # Score: other writers' digits against the champion's references raise the alarm
        run_deployment(team, "score-folder/score-inbox", folder=inbox, dataset=dataset)
        reports = [json.loads(p.read_text()) for p in dataset.glob("date=*/_drift-*.json")]
        assert [r["alarm"] for r in reports] == [True], reports

        # Review: the drift event started review-queue, which waits for a person
        review = loop_run(team, "digitflow.scoring.drift", "a review-digits run paused for a "
                          "person after the drift event", paused=True)
        with api_client(api) as client:
            # Its work is done: the rescoring below may alarm again (the inbox is still other
            # writers'), and a second review would wait for a person who is not coming.
            client.pause_automation(automation_on(team, "digitflow.scoring.drift").id)
        answers = label_in_the_form(browser, team["url"], review, truth, tmp_path / "review")
        review = finished(team, review, "the review after Submit")
        spans = [take_in(p) for p in sorted((root / "data" / "labelled").iterdir())
                 if p.is_dir() and not p.name.startswith(".")]
        assert len(spans) == 1 and spans[0].name.startswith("review-"), spans
        assert {f.sha256: f.label for f in spans[0].files} == {
            file_sha256(inbox / path): digit for path, digit in answers.items()}
        assert any(split_of(f.sha256) == "test" for f in spans[0].files), \
            "no labelled picture fell into your test set: the gate cannot measure on it"

        # Retrain: the labels event started retrain-nightly; its gate measured on both test sets
        train = loop_run(team, "digitflow.labels.added", "a train-digits run after the labels event")
        report = next(a for a in run_artifacts(train.id, api) if a.type == "markdown"
                      and a.key.startswith("train-report"))
        gate = report.data.split("## Champion gate", 1)[-1]
        assert "Your test set" in gate and "on your test set" in gate, gate[:2000]
        assert "promoted" in train.tags, gate[:2000]
        new_champion = champion(team)
        assert new_champion != retrained and new_champion in report.data
        images = report_from_run_page(browser, team["url"], train, report, tmp_path / "training")
        assert images and all(i["width"] > 0 for i in images), images

        # Rescore: the promotion started score-inbox with its own parameters
        rescore = loop_run(team, "digitflow.model.promoted",
                           "a score-folder run after the promotion")
        assert rescore.parameters == {"folder": "data/inbox",
                                      "dataset": "artifacts/predictions/inbox"}
        table = pq.read_table(dataset).to_pandas()
        by_new = table[table["model_version"] == new_champion]
        assert sorted(by_new["path"]) == sorted(truth), "not every picture once by the new champion"
        report = next(a for a in run_artifacts(rescore.id, api) if a.type == "markdown")
        report_from_run_page(browser, team["url"], rescore, report, tmp_path / "rescoring")
        print(f"screenshots in {tmp_path}: {sorted(p.name for p in tmp_path.glob('*.png'))}")
    finally:
        stop_the_loop(team)
