"""A week of a team's operations, compressed: the soak that tests/test_soak.py runs on PostgreSQL
and that prints the figures of docs/RELIABILITY.md for either database.

    .venv/bin/python tests/soak.py --db postgres|sqlite [--hours 50] [--keep]

A real `prefect server start` (on a PostgreSQL cluster of its own, or SQLite), the work pool,
`prefect deploy --all` from this checkout, a process worker. Each simulated hour, while nothing
runs, the inbox changes (new pictures, rewritten ones, deleted ones, broken files); then four
score-inbox runs are scheduled 3 s apart (each takes longer: they overlap, and the deployment's
limit of one queues them),
and the hour ends when every run it started, and every run the events started (a promotion
rescores the inbox; new labels retrain), has ended. On the way: retrains (one killed with
`kill -9` after its first epoch, then run again), reviews answered through the paused run's form
(the API the UI's Resume button uses), and the worker stopped and started again. Then it checks
that every picture has exactly one prediction per model version that was champion while it was in
the inbox, that no run failed but the injected faults, each followed by a completed rerun, and
that the server's and the worker's memory stayed within 1.5× of the first hour's.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import (  # noqa: E402
    BIN, REPO, api_client, encode, end, free_port, new_root, prefect, set_parameters)

PER_HOUR = 4  # score-inbox runs every 15 minutes
EVERY = 3  # s between them: 15 minutes compressed 300×; a run takes longer, so they overlap
RUN_TIMEOUT = 900  # s for any one run (a retrain imports TensorFlow and trains)
# Retrains a few seconds long; the killed one runs long enough to be killed after an epoch, and
# its rerun is let through the gate so that a second version is champion for a while.
QUICK = {"preset": "seed", "epochs": 1, "limit": 2000}
KILLED = {"preset": "seed", "epochs": 3, "limit": 6000, "gate_margin": 0.5, "mnist_tolerance": 1.0}
REVIEW = {"limit": 8, "timeout": 600}
# Compressed time: the worker asks for work every half second, and a run waiting for the
# deployment's slot is retried after half a second, not 10 s and 30 s.
FAST_WORKER = {"PREFECT_WORKER_QUERY_SECONDS": "0.5"}
FAST_SERVER = {"PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "0.5"}


class Inbox:
    """The inbox folder, changed hour by hour, and the true digit of every picture put in it."""

    def __init__(self, folder: Path, mnist_npz: Path, seed: int = 0):
        from tasks.demo import render_scan

        self.folder, self.render = folder, render_scan
        with np.load(mnist_npz) as data:
            self.x, self.y = data["x_test"], data["y_test"]
        self.rng = np.random.default_rng(seed)
        self.next = 0  # the next MNIST test digit to use
        self.truth: dict[str, int] = {}  # sha256 → digit, for the person answering reviews
        self.counts = Counter()

    def _scan(self, path: str) -> None:
        from tasks.store import write_bytes

        digit = self.next
        self.next += 1
        data = encode(self.render(self.x[digit], self.rng))
        write_bytes(self.folder / path, data)
        self.truth[sha256(data)] = int(self.y[digit])

    def change(self, hour: int) -> None:
        """An hour's changes: two new pictures; every third hour one rewritten, every fourth one
        deleted, every sixth a broken file (random bytes with a picture's name)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if hour == 0:
            for i in range(40):
                self._scan(f"day0/scan-{i:03d}.png")
            self.counts["added"] += 40
            return
        for i in range(2):
            self._scan(f"hour{hour:03d}/scan-{i}.png")
        self.counts["added"] += 2
        present = sorted(p for p in self.folder.rglob("scan-*.png"))
        if hour % 3 == 0:
            self._scan(str(present[self.rng.integers(len(present))].relative_to(self.folder)))
            self.counts["rewritten"] += 1
        if hour % 4 == 0:
            present[self.rng.integers(len(present))].unlink(missing_ok=True)
            self.counts["deleted"] += 1
        if hour % 6 == 0:
            (self.folder / f"hour{hour:03d}" / "broken.png").write_bytes(self.rng.bytes(300))
            self.counts["broken"] += 1

    def contents(self) -> set[str]:
        return {sha256(p.read_bytes()) for p in self.folder.rglob("*.png")}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_rss_mib(pid: int, children: bool = True) -> float:
    """Resident memory of a process (and its descendants): MiB."""
    pids, total = [pid], 0
    if children:
        parents = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:  # /proc/PID/stat: "PID (name) state PPID ..."
                    stat = Path(f"/proc/{name}/stat").read_text()
                    parents[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError):
                    pass
        i = 0
        while i < len(pids):
            pids += [p for p, parent in parents.items() if parent == pids[i]]
            i += 1
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def flow_run_pid(run_id: str) -> int | None:
    """The process running a flow run (the worker gives it PREFECT__FLOW_RUN_ID)."""
    needle = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if needle in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                    return int(name)
            except OSError:
                pass
    return None


class Postgres:
    """A throwaway cluster, made and started as `make postgres` does."""

    def __init__(self, folder: Path):
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            raise RuntimeError("needs Debian's postgresql: apt-get install postgresql")
        self.bin, self.data, self.port = found[-1].parent, folder, free_port()
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        folder.mkdir(parents=True)
        if self.as_pg:  # the postgres user must reach its folder (mkdtemp's are owner-only)
            folder.parent.chmod(folder.parent.stat().st_mode | 0o011)
            shutil.chown(folder, "postgres")
        self._pg("initdb", "-D", folder, "-U", "prefect", "--auth=trust", "-E", "UTF8", "--no-locale")
        self._pg("pg_ctl", "-D", folder, "-l", folder / "server.log", "-w", "-s", "-o",
                 f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", "start")
        self._pg("createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "prefect", "prefect")
        self.url = f"postgresql+asyncpg://prefect@127.0.0.1:{self.port}/prefect"

    def _pg(self, tool: str, *args) -> str:
        done = subprocess.run([*self.as_pg, self.bin / tool, *map(str, args)], capture_output=True,
                              text=True)
        if done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stderr[-2000:]}")
        return done.stdout

    def sql(self, statement: str) -> str:
        return self._pg("psql", "-h", "127.0.0.1", "-p", self.port, "-U", "prefect", "-d", "prefect",
                        "-qtAc", statement).strip()

    def size(self) -> int:
        return int(self.sql("SELECT pg_database_size('prefect')"))

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-s", "stop")


class Team:
    """The server, the deployments and the worker, as `make serve` starts them."""

    def __init__(self, work: Path, root: Path, db: str):
        self.work, self.root, self.db = work, root, db
        self.postgres = Postgres(work / "postgres") if db == "postgres" else None
        self.home = work / "home"
        port = free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        self.env = {**os.environ, "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api,
                    "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "DIGITFLOW_ROOT": str(root), "PWD": str(REPO)}
        self.port = port
        self.home.mkdir()
        self.start_server()
        prefect(self.env, "work-pool", "create", "digitflow", "--type", "process")
        prefect(self.env, "--no-prompt", "deploy", "--all")
        # The driver is the clock: the real schedules (every 15 min, 03:00) paused; the events
        # stay on (new labels retrain, a promotion rescores), but a drift alarm starts no review:
        # reviews come when the driver's person has time.
        prefect(self.env, "--no-prompt", "deployment", "schedule", "pause", "--all")
        with api_client(self.api) as client:
            for automation in client.read_automations():
                if "digitflow.scoring.drift" in automation.trigger.expect:
                    client.pause_automation(automation.id)
            self.deployments = {d.name: d.id for d in client.read_deployments()}
        self.names = {i: name for name, i in self.deployments.items()}  # deployment id → name
        self.worker = None
        self.start_worker()

    def start_server(self, **settings: str) -> None:
        env = {**self.env, **FAST_SERVER, **settings}
        if self.postgres:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.postgres.url
        self.server = subprocess.Popen(
            [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=open(self.work / "server.log", "a"), stderr=subprocess.STDOUT,
            start_new_session=True)
        prefect(self.env, "server", "status", "--wait", "--timeout", "180")

    def stop_server(self) -> None:
        end(self.server, grace=60)

    def age_runs(self, days: int) -> None:
        """With the server stopped: every run ended `days` earlier than it did (months pass)."""
        if self.postgres:
            self.postgres.sql(f"UPDATE flow_run SET end_time = end_time - interval '{days} days'")
        else:
            import sqlite3

            with sqlite3.connect(self.home / "prefect.db") as db:
                db.execute("UPDATE flow_run SET end_time = strftime('%Y-%m-%d %H:%M:%f', end_time, "
                           f"'-{days} days') WHERE end_time IS NOT NULL")

    def compact(self) -> None:
        """With the server stopped: the database's free space given back (VACUUM)."""
        if self.postgres:
            self.postgres.sql("VACUUM FULL")
        else:
            import sqlite3

            with sqlite3.connect(self.home / "prefect.db", isolation_level=None) as db:
                db.execute("VACUUM")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # VACUUM went through the WAL

    def start_worker(self) -> None:
        log = open(self.work / "worker.log", "a")
        self.worker = subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "digitflow"],
                                       env={**self.env, **FAST_WORKER}, cwd=REPO, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)

    def stop_worker(self) -> None:
        # It passes SIGTERM on as SIGINT and may stay: after 10 s its group is killed (make stop).
        end(self.worker, grace=10)

    def db_bytes(self) -> int:
        if self.postgres:
            return self.postgres.size()
        return sum(p.stat().st_size for p in self.home.glob("prefect.db*"))

    def memory(self) -> dict:
        """The median of 5 samples a second apart: a worker's RSS moves by tens of MiB while it
        submits a run."""
        samples = []
        for _ in range(5):
            samples.append((tree_rss_mib(self.server.pid), tree_rss_mib(self.worker.pid, False)))
            time.sleep(1)
        server, worker = (sorted(column)[2] for column in zip(*samples))
        return {"server_mib": round(server, 1), "worker_mib": round(worker, 1)}

    def stop(self) -> None:
        self.stop_worker()
        self.stop_server()
        if self.postgres:
            self.postgres.stop()


class Driver:
    """The clock and the people: starts the runs, injects the faults, answers the reviews."""

    def __init__(self, team: Team, inbox: Inbox):
        self.team, self.inbox = team, inbox
        self.mine: dict[str, str] = {}  # run id → why the driver started it
        self.faults: list[dict] = []

    def start(self, deployment: str, why: str, after: float = 0, **parameters):
        from prefect.states import Scheduled

        when = datetime.now(timezone.utc) + timedelta(seconds=after)
        with api_client(self.team.api) as client:
            run = client.create_flow_run_from_deployment(
                self.team.deployments[deployment], parameters=parameters or None,
                state=Scheduled(scheduled_time=when))
        self.mine[str(run.id)] = why
        return run

    def runs(self, unfinished: bool = False) -> list:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, \
            FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        going = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[
            StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED,
            StateType.CANCELLING])))
        runs = []
        with api_client(self.team.api) as client:
            while page := client.read_flow_runs(flow_run_filter=going if unfinished else None,
                                                limit=200, offset=len(runs)):  # the API's most
                runs += page
        return runs

    def wait(self, run_id, until=lambda s: s.is_final(), timeout: float = RUN_TIMEOUT):
        deadline = time.monotonic() + timeout
        with api_client(self.team.api) as client:
            while time.monotonic() < deadline:
                run = client.read_flow_run(run_id)
                if until(run.state):
                    return run
                time.sleep(0.5)
        raise TimeoutError(f"run {run_id} ({self.mine.get(str(run_id))}) still {run.state.name} "
                           f"after {timeout} s")

    def settle(self, timeout: float = RUN_TIMEOUT) -> None:
        """Until every run has ended, and every event has started its run: each promotion a
        rescoring of the inbox, each review's new span a retrain."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.runs(unfinished=True):
                time.sleep(1)
                continue
            runs = self.runs()
            started = Counter(self.deployment_name(r) for r in runs if str(r.id) not in self.mine)
            promotions = sum(1 for r in runs if self.deployment_name(r) == "retrain-nightly"
                             and "promoted" in r.tags)
            spans = len(list((self.team.root / "data" / "labelled").glob("review-*")))
            if all(r.state.is_final() for r in runs) and started["score-inbox"] >= promotions \
                    and started["retrain-nightly"] >= spans:
                return
            time.sleep(1)
        raise TimeoutError(f"runs still going, or never started by their event, after {timeout} s")

    def deployment_name(self, run) -> str:
        return self.team.names.get(run.deployment_id, "")

    def champion(self) -> str | None:
        path = self.team.root / "artifacts" / "models" / "champion.json"
        return json.loads(path.read_text())["model_version"] if path.exists() else None

    def retrain(self, why: str, **parameters) -> None:
        run = self.wait(self.start("retrain-nightly", why, **parameters).id)
        assert run.state.is_completed(), f"{why}: {run.state.name} {run.state.message}"
        self.settle()

    def kill_a_retrain(self, **parameters) -> None:
        """A retrain killed with `kill -9` once an epoch is done (its checkpoint is written)."""
        cache = self.team.root / "artifacts" / "cache"
        run = self.start("retrain-nightly", "retrain, killed with kill -9", **parameters)
        deadline = time.monotonic() + RUN_TIMEOUT
        while not list(cache.glob("*.checkpoint.npz")):
            if time.monotonic() > deadline:
                raise TimeoutError("the retrain to kill wrote no checkpoint")
            time.sleep(0.2)
        pid = flow_run_pid(str(run.id))
        os.kill(pid, signal.SIGKILL)
        ended = self.wait(run.id)
        self.faults.append({"fault": "kill -9 of a retrain after its first epoch", "run": str(run.id),
                            "state": ended.state.name})
        rerun = self.wait(self.start("retrain-nightly", "rerun of the killed retrain", **parameters).id)
        self.faults[-1]["rerun"] = rerun.state.name
        self.settle()

    def review(self) -> int:
        """A review run, answered as a person who knows the digits; the pictures labelled."""
        from prefect.flow_runs import resume_flow_run
        from prefect.input.run_input import keyset_from_paused_state
        from prefect.settings import PREFECT_API_URL, temporary_settings

        run = self.wait(self.start("review-queue", "review").id,
                        until=lambda s: s.is_paused() or s.is_final())
        if run.state.is_final():
            return 0
        with api_client(self.team.api) as client:
            keys = keyset_from_paused_state(run.state)
            schema = client.read_flow_run_input(run.id, keys["schema"])
        fields = json.loads(schema)["properties"]
        answers = {}
        for name, field in fields.items():
            path = field["title"].split(": ", 1)[1]
            answers[name] = str(self.inbox.truth[sha256((self.inbox.folder / path).read_bytes())])
        with temporary_settings({PREFECT_API_URL: self.team.api}):
            resume_flow_run(run.id, run_input=answers)
        ended = self.wait(run.id)
        assert ended.state.is_completed(), ended.state.message
        self.settle()
        return len(answers)

    def restart_worker(self) -> None:
        self.team.stop_worker()
        self.faults.append({"fault": "worker stopped and started again", "run": None,
                            "state": "stopped"})
        self.team.start_worker()


def soak(db: str, work: Path, mnist_npz: Path, hours: int = 50, log=print) -> dict:
    """Run the compressed week in `work`; its figures and the checks' findings."""
    started = time.monotonic()
    root = new_root(work / "root", mnist_npz)
    team = Team(work, root, db)
    inbox = Inbox(root / "data" / "inbox", mnist_npz)
    dataset = root / "artifacts" / "predictions" / "inbox"
    driver = Driver(team, inbox)
    figures = {"db": db, "hours": hours, "memory": [], "db_bytes": []}
    present: dict[int, set[str]] = {}
    champions: dict[int, set[str]] = {}
    reviews, restart = {hours * 16 // 100, hours * 60 // 100, hours * 80 // 100}, hours // 2
    try:
        inbox.change(0)
        driver.retrain("first retrain: the first champion", **QUICK)
        figures["db_bytes"].append((0, team.db_bytes()))
        with api_client(team.api) as client:
            set_parameters(client, "train-digits/retrain-nightly", **QUICK)
            set_parameters(client, "review-digits/review-queue", **REVIEW)
        labelled = 0
        for hour in range(hours):
            if hour:
                inbox.change(hour)
            present[hour] = inbox.contents()
            champions[hour] = {driver.champion()}
            if hour == restart:
                driver.restart_worker()
            scoring = [driver.start("score-inbox", f"hour {hour}", after=i * EVERY)
                       for i in range(PER_HOUR)]
            if hour == hours // 3:
                driver.kill_a_retrain(**KILLED)
            ended = [driver.wait(run.id) for run in scoring]
            if hour == restart:  # the runs scheduled while it was down, run by the new worker
                next(f for f in driver.faults if f["fault"].startswith("worker"))["rerun"] = \
                    Counter(r.state.name for r in ended)
            driver.settle()
            if hour in reviews:
                labelled += driver.review()
            champions[hour].add(driver.champion())
            if hour == 0:
                figures["first_hour"] = team.memory()
            if hour % 10 == 9 or hour == hours - 1:
                figures["memory"].append((hour + 1, team.memory()))
                figures["db_bytes"].append((hour + 1, team.db_bytes()))
                log(f"{db}: hour {hour + 1} of {hours}, {time.monotonic() - started:.0f} s, "
                    f"{figures['memory'][-1][1]}, database {figures['db_bytes'][-1][1] / 2**20:.1f} MiB")
        figures["end"] = team.memory()
        figures["labelled"] = labelled
        runs = driver.runs()
        figures |= check_predictions(dataset, present, champions)
        figures["housekeeping"] = housekeeping(team, driver, dataset)
    finally:
        team.stop()
    figures["wall_s"] = round(time.monotonic() - started)
    log = (work / "server.log").read_text(errors="replace")
    figures["server_errors"] = log.count("| ERROR ")
    figures["database_locked"] = log.count("OperationalError: database is locked")
    figures["inbox"] = dict(inbox.counts)
    figures["days"] = round(hours * PER_HOUR / 96, 2)

    # What the runs were, and how they ended
    names = team.names
    figures["runs"] = Counter(f"{names.get(r.deployment_id, '?')}: {r.state.name}" for r in runs)
    faulty = {f["run"] for f in driver.faults}
    figures["failed"] = [f"{names.get(r.deployment_id)} {r.id}: {r.state.name} {r.state.message}"
                         for r in runs if not r.state.is_completed() and str(r.id) not in faulty]
    figures["faults"] = driver.faults
    figures["promoted"] = sum(1 for r in runs if names.get(r.deployment_id) == "retrain-nightly"
                              and "promoted" in r.tags)
    return figures


def check_predictions(dataset: Path, present: dict[int, set[str]],
                      champions: dict[int, set[str]]) -> dict:
    """Every picture once per version that was champion while it was in the inbox (by content:
    the dataset skips what a version has scored), and the dataset read as one table."""
    import pyarrow.dataset as pads

    table = pads.dataset(dataset, format="parquet", partitioning="hive").to_table(
        columns=["sha256", "model_version"])
    rows = Counter(zip(table["sha256"].to_pylist(), table["model_version"].to_pylist()))
    expected = {(sha, v) for hour in present for sha in present[hour] for v in champions[hour]}
    return {"predictions": table.num_rows,
            "pictures": len({sha for shas in present.values() for sha in shas}),
            "versions": sorted({v for vs in champions.values() for v in vs if v}),
            "duplicates": sorted(k for k, n in rows.items() if n > 1),
            "lost": sorted(expected - set(rows)), "unexpected": sorted(set(rows) - expected)}


def housekeeping(team: Team, driver: Driver, dataset: Path) -> dict:
    """On the soak's leftovers: `digitflow prune`, then months going by (every run aged past the
    retention) under Prefect's vacuum as `make serve` sets it; after each, scoring the inbox still
    skips what was scored."""
    import pyarrow.dataset as pads

    def rows() -> int:
        return pads.dataset(dataset, format="parquet", partitioning="hive").count_rows()

    def rescore(why: str) -> dict:
        before = rows()
        run = driver.wait(driver.start("score-inbox", why).id)
        return {"rescore": run.state.name, "new_rows": rows() - before}

    artifacts = team.root / "artifacts"
    before = tree_bytes(artifacts)
    done = subprocess.run([BIN / "digitflow", "prune", "--older-than", "0"], env=team.env,
                          cwd=team.root, capture_output=True, text=True, check=True)
    pruned = json.loads(done.stdout.strip().splitlines()[-1])
    found = {"prune": {"removed": len(pruned["removed"]), "kept_versions": pruned["kept_versions"],
                       "artifacts_mib": [mib(before), mib(tree_bytes(artifacts))],
                       **rescore("after digitflow prune")}}

    runs, size = len(driver.runs()), team.db_bytes()
    team.stop_server()
    team.age_runs(100)
    team.start_server(PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED="events,flow_runs",
                      PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD=str(90 * 86400),
                      PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS="2",
                      PREFECT_SERVER_SERVICES_DB_VACUUM_ORPHAN_CLEANUP_LOOP_SECONDS="2")
    deadline = time.monotonic() + 300
    while (left := len(driver.runs())) and time.monotonic() < deadline:
        time.sleep(2)
    found["vacuum"] = {"runs": [runs, left], "db_mib": [mib(size), mib(team.db_bytes())],
                       **rescore("after the vacuum")}
    team.stop_server()
    team.compact()
    found["vacuum"]["db_mib"].append(mib(team.db_bytes()))
    return found


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def mib(n: int) -> float:
    return round(n / 2**20, 1)


def main() -> None:
    options = argparse.ArgumentParser()
    options.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    options.add_argument("--hours", type=int, default=50)
    options.add_argument("--keep", action="store_true")
    args = options.parse_args()
    work = Path(tempfile.mkdtemp(prefix=f"digitflow-soak-{args.db}-"))
    try:
        figures = soak(args.db, work, REPO / "data" / "raw" / "mnist.npz", args.hours)
        print(json.dumps(figures, indent=1, default=str))
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
