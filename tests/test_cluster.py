"""Scoring and a sweep on a real Dask cluster (`dask scheduler` + two `dask worker` processes on
loopback) reporting to a real Prefect server, compared with the same jobs run locally."""

import os
import subprocess

import pandas as pd
import pytest

from support import BIN, REPO, api_client, digitflow, free_port, last_json, new_root
from tasks.demo import make_demo_folder

pytestmark = pytest.mark.slow
SWEEP = ["--hidden", "32-16", "64-32", "--batch-size", "128", "--epochs", "2", "--limit", "3000"]


@pytest.fixture(scope="module")
def cluster(prefect_server, tmp_path_factory):
    """The scheduler's address; the workers report to the test's Prefect server."""
    logs = tmp_path_factory.mktemp("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = prefect_server["env"]
    commands = [[BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--dashboard-address", "127.0.0.1:0"]]
    commands += [[BIN / "dask", "worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                  "--nthreads", "1", "--dashboard-address", "127.0.0.1:0"]] * 2
    processes = []
    try:
        for i, command in enumerate(commands):
            with open(logs / f"dask-{i}.log", "w") as log:
                processes.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=log,
                                                  stderr=subprocess.STDOUT))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            pids = set(client.run(os.getpid).values())
        yield {"address": address, "worker_pids": pids}
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=60)


def run(env: dict, root, *args: object) -> dict:
    """`digitflow` against the test's Prefect server, writing under `root`."""
    return last_json(digitflow(root, *args, server_env=env, cwd=REPO))


@pytest.fixture(scope="module")
def sweeps(prefect_server, cluster, tmp_path_factory, mnist_npz):
    """The same tiny sweep on the cluster and in-process, each in its own root."""
    parent = tmp_path_factory.mktemp("sweeps")
    env = prefect_server["env"]
    on_cluster = new_root(parent / "cluster", mnist_npz)
    local = new_root(parent / "local", mnist_npz)
    return {"cluster": run(env, on_cluster, "sweep", *SWEEP, "--dask-address", cluster["address"]),
            "local": run(env, local, "sweep", *SWEEP), "root": on_cluster}


def test_sweep_on_the_cluster_matches_the_local_sweep(sweeps, cluster):
    """The same trials and the same winner. Weights agree up to floating-point reordering only:
    a Dask worker runs TensorFlow with one OpenMP thread (Dask's default), which sums in another
    order, so model versions (hashes of the exact weights) may differ."""
    remote, local = sweeps["cluster"], sweeps["local"]
    assert remote["trials"] == local["trials"] == 2 and remote["best_trial"] == local["best_trial"]
    assert remote["promoted"] and remote["test_accuracy"] == pytest.approx(local["test_accuracy"], abs=1e-3)
    trials = pd.read_parquet(remote["trials_table"])
    here = pd.read_parquet(local["trials_table"])
    same = ["trial", "hidden", "batch_size", "learning_rate", "epochs", "params",
            "val_accuracy", "val_loss", "train_accuracy"]
    pd.testing.assert_frame_equal(trials[same], here[same], rtol=1e-4)
    assert trials["val_accuracy"].is_monotonic_decreasing
    # Each trial ran in one of the two Dask worker processes.
    assert {int(p.rsplit(":", 1)[1]) for p in trials["process"]} <= cluster["worker_pids"]


def test_scoring_on_the_cluster_matches_the_local_scoring(prefect_server, cluster, sweeps, mnist):
    root = sweeps["root"]
    folder = root / "inbox"
    make_demo_folder(mnist["x_test"][:600], mnist["y_test"][:600], folder, count=600, seed=3)
    env = prefect_server["env"]
    common = ["score", folder, "--chunk-size", "150"]
    on_cluster = run(env, root, *common, "--dask-address", cluster["address"],
                           "--output", root / "cluster.parquet")
    local = run(env, root, *common, "--output", root / "local.parquet")
    assert on_cluster["model_version"] == local["model_version"] == sweeps["cluster"]["model_version"]
    assert on_cluster["scored"] == local["scored"] == 600
    a = pd.read_parquet(root / "cluster.parquet").drop(columns="scored_at")
    b = pd.read_parquet(root / "local.parquet").drop(columns="scored_at")
    assert len(a) == 603 and (a["status"] == "error").sum() == 3
    pd.testing.assert_frame_equal(a, b, check_exact=True)  # same rows, labels, probabilities


def test_cluster_runs_are_recorded_in_the_server(prefect_server, sweeps):
    """The workers' task runs land in the same server as their flow runs: one place to look."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with api_client(prefect_server["env"]["PREFECT_API_URL"]) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[sweeps["cluster"]["run_id"]])))
    trials = [r for r in runs if r.name.startswith("train-trial-")]
    assert len(trials) == 2 and all(r.state.is_completed() for r in trials)


def test_cluster_options_choose_the_task_runner():
    from prefect_dask import DaskTaskRunner

    from tasks.cluster import dask_runner

    assert dask_runner(None, None) is None  # the flow keeps its own runner
    local = dask_runner(3, None)
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 3
    assert dask_runner(None, "tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    with pytest.raises(ValueError, match="not both"):
        dask_runner(2, "tcp://127.0.0.1:8786")


def test_chunks_are_large_here_and_several_for_each_worker_on_dask(monkeypatch):
    from types import SimpleNamespace

    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    import flows.score

    for runner, size in ((ThreadPoolTaskRunner(max_workers=2), 10_000), (DaskTaskRunner(), 2_000)):
        context = SimpleNamespace(task_runner=runner)
        monkeypatch.setattr(flows.score.FlowRunContext, "get", lambda context=context: context)
        assert flows.score.default_chunk_size() == size
