"""Where a flow's tasks run: in the flow's own process, or on a Dask cluster (prefect-dask).

Dask workers run the same tasks and write to the same paths as the flow, so an existing cluster
must share this machine's filesystem (or mount the same artifacts root at the same path).
Workers report their task runs to the Prefect API named by PREFECT_API_URL; without one, each
worker starts a temporary server of its own, which works but costs seconds per worker.
"""

from prefect.task_runners import TaskRunner


def dask_runner(workers: int | None, address: str | None) -> TaskRunner | None:
    """A DaskTaskRunner for an existing cluster (`address`) or a local one of `workers` processes;
    None when neither is asked for (the flow keeps its own task runner)."""
    if workers and address:
        raise ValueError("give --workers N (a local cluster) or --dask-address (an existing one), not both")
    if not (workers or address):
        return None
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    # One thread per worker: each task already keeps a core busy (TensorFlow or image decoding).
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                          "processes": True})
