"""The soak (tests/soak.py) on PostgreSQL, as a team runs digitflow: 200 score-inbox runs over a
changing inbox, retrains (one killed), reviews and a worker restart; nothing lost, nothing twice.
The SQLite figures beside these are in docs/RELIABILITY.md (`tests/soak.py --db sqlite`)."""

import shutil
import tempfile
from pathlib import Path

import pytest

from soak import PER_HOUR, soak
from test_operations import postgres_tools

pytestmark = pytest.mark.slow

HOURS = 50  # 200 score-inbox runs: two days of a 15-minute schedule


@pytest.fixture
def work():
    """Outside pytest's owner-only temporary folders: the postgres user must reach its cluster."""
    folder = Path(tempfile.mkdtemp(prefix="digitflow-soak-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_compressed_week_on_postgresql_loses_nothing_and_scores_nothing_twice(work, mnist_npz):
    postgres_tools()  # skips (fails in CI) without Debian's postgresql
    found = soak("postgres", work, mnist_npz, hours=HOURS)
    runs = found["runs"]
    print(found)

    assert runs["score-inbox: Completed"] >= HOURS * PER_HOUR
    assert runs["review-queue: Completed"] == 3 and found["labelled"] > 0
    assert runs["retrain-nightly: Completed"] >= 5 and found["promoted"] >= 2
    # No run failed but the injected faults, and each was followed by a completed rerun
    assert found["failed"] == []
    assert [(f["fault"], f["state"]) for f in found["faults"]] == [
        ("kill -9 of a retrain after its first epoch", "Crashed"),
        ("worker stopped and started again", "stopped")]
    assert found["faults"][0]["rerun"] == "Completed"
    assert found["faults"][1]["rerun"] == {"Completed": PER_HOUR}
    # Every picture once per version that was champion while it was in the inbox
    assert found["inbox"]["rewritten"] and found["inbox"]["deleted"] and found["inbox"]["broken"]
    assert found["duplicates"] == [] and found["lost"] == [] and found["unexpected"] == []
    assert found["predictions"] >= found["pictures"]
    # Housekeeping on the leftovers: pruned artifacts and vacuumed runs cost no rescoring
    prune, vacuum = found["housekeeping"]["prune"], found["housekeeping"]["vacuum"]
    assert set(found["versions"]) <= set(prune["kept_versions"]) and prune["removed"]
    assert (prune["rescore"], prune["new_rows"]) == ("Completed", 0)
    assert vacuum["runs"][1] == 0 and (vacuum["rescore"], vacuum["new_rows"]) == ("Completed", 0)
    # Memory at the end within 1.5× of the first hour's
    for process in ("server_mib", "worker_mib"):
        assert found["end"][process] <= 1.5 * found["first_hour"][process], (process, found)
