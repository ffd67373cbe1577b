"""Model versions, the champion, the gate, explicit promotion and rollback."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tasks.mnist import FROZEN_TEST_SET
from tasks.paths import Paths
from tasks.records import Evaluation
from tasks.modelfiles import ModelNotFound, resolve_model
from tasks.registry import decide, list_models, promote, rollback


def fake_version(paths: Paths, version: str, accuracy: float, created: str) -> None:
    folder = paths.models / version
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"weights")
    (folder / "metadata.json").write_text(json.dumps({
        "model_version": version, "model_path": str(folder / "model.keras"), "preset": "seed",
        "created_at": created, "metrics": {"test_accuracy": accuracy}, "train_images": 100,
        "settings": {"epochs": 1}}))


@pytest.fixture
def paths(tmp_path) -> Paths:
    paths = Paths(tmp_path)
    fake_version(paths, "aaaaaaaaaaaa", 0.97, "2026-11-01T00:00:00+00:00")
    fake_version(paths, "bbbbbbbbbbbb", 0.98, "2026-11-02T00:00:00+00:00")
    return paths


def measured(version: str, accuracy: float, test_set: str = FROZEN_TEST_SET,
             yours: float | None = None) -> dict[str, Evaluation]:
    """A model's evaluations: on MNIST's test set, and on yours if `yours` is its accuracy."""
    sets = {"mnist": Evaluation(key="k", version=version, test_set=test_set, accuracy=accuracy,
                                loss=0.1, images=10_000, per_class=[])}
    if yours is not None:
        sets["yours"] = Evaluation(key="y", version=version, test_set="yoursfingerprint",
                                   accuracy=yours, loss=0.2, images=60, per_class=[], name="yours")
    return sets


@pytest.mark.parametrize("new, margin, promoted", [
    (0.981, 0.0, True),  # better
    (0.980, 0.0, True),  # not worse
    (0.979, 0.0, False),  # worse
    (0.979, 0.002, True),  # worse, but within the margin
])
def test_gate_promotes_only_a_challenger_that_is_not_worse(new, margin, promoted):
    decision = decide(measured("cccc", new), measured("bbbb", 0.98), margin)
    assert decision.promote is promoted
    assert decision.champion_accuracy == 0.98 and decision.challenger_accuracy == new


def test_first_model_becomes_champion_and_a_champion_is_not_promoted_twice():
    assert decide(measured("cccc", 0.5), None, 0.0).promote
    again = decide(measured("bbbb", 0.98), measured("bbbb", 0.98), 0.0)
    assert not again.promote and "already the champion" in again.reason


def test_a_model_measured_on_another_test_set_is_never_promoted_automatically():
    other = "0123456789abcdef"
    for champion in (None, measured("bbbb", 0.5, test_set=other)):
        decision = decide(measured("cccc", 0.99, test_set=other), champion, 0.0)
        assert not decision.promote
        assert "not the frozen MNIST test set" in decision.reason
        assert "digitflow models promote cccc" in decision.reason


@pytest.mark.parametrize("mnist, yours, promoted, decided_by", [
    (0.980, 0.90, True, "both test sets"),  # better on yours, MNIST unchanged
    (0.9775, 0.95, True, "both test sets"),  # loses 0.25 points on MNIST: within 0.3
    (0.976, 0.95, False, "MNIST's test set"),  # loses 0.4 points on MNIST
    (0.990, 0.79, False, "your test set"),  # better on MNIST, worse on yours
])
def test_with_your_test_set_the_gate_protects_both(mnist, yours, promoted, decided_by):
    decision = decide(measured("cccc", mnist, yours=yours), measured("bbbb", 0.980, yours=0.80), 0.0)
    assert decision.promote is promoted and decision.decided_by == decided_by
    assert decision.your_test_set == "yoursfingerprint"
    assert (decision.challenger_your_accuracy, decision.champion_your_accuracy) == (yours, 0.80)


def test_the_mnist_tolerance_is_a_setting():
    strict = decide(measured("cccc", 0.9775, yours=0.95), measured("bbbb", 0.98, yours=0.8), 0.0,
                    mnist_tolerance=0.001)
    assert not strict.promote and "beyond the tolerance 0.001" in strict.reason


def test_an_unchanged_retrain_says_nothing_new():
    again = decide(measured("bbbb", 0.98, yours=0.9), measured("bbbb", 0.98, yours=0.9), 0.0)
    assert not again.promote and again.reason.startswith("nothing new")


def test_promote_rollback_and_list(paths):
    promote(paths, "aaaaaaaaaaaa", "first")
    promote(paths, "bbbbbbbbbbbb", "better")
    assert [m["champion"] for m in list_models(paths)] == [False, True]
    assert resolve_model(paths, None) == paths.models / "bbbbbbbbbbbb" / "model.keras"

    back = rollback(paths)
    assert back["model_version"] == "aaaaaaaaaaaa" and back["reason"] == "rollback from bbbbbbbbbbbb"
    assert resolve_model(paths, None) == paths.models / "aaaaaaaaaaaa" / "model.keras"
    log = [json.loads(line) for line in paths.promotions.read_text().splitlines()]
    assert [r["model_version"] for r in log] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "aaaaaaaaaaaa"]
    assert sorted(p.name for p in paths.models.iterdir() if p.is_file()) == \
        ["champion.json", "promotions.jsonl"]  # no temporary files left behind


def test_rolling_back_twice_goes_two_champions_back(paths):
    fake_version(paths, "cccccccccccc", 0.99, "2026-11-03T00:00:00+00:00")
    for version in ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"):
        promote(paths, version, "gate")
    assert rollback(paths)["model_version"] == "bbbbbbbbbbbb"
    assert rollback(paths)["model_version"] == "aaaaaaaaaaaa"
    with pytest.raises(ModelNotFound, match="no earlier champion"):
        rollback(paths)


def test_a_reader_never_sees_a_half_written_champion(paths):
    """Promotions back and forth while another thread reads the champion, as a scorer does."""
    promote(paths, "aaaaaaaaaaaa", "first")
    done, seen = threading.Event(), []

    def read_champion() -> None:
        while not done.is_set():
            seen.append(resolve_model(paths, None).parent.name)  # raises on a torn pointer
            json.loads(paths.champion.read_text())

    with ThreadPoolExecutor(max_workers=1) as pool:
        reader = pool.submit(read_champion)
        try:
            for i in range(200):
                promote(paths, ("bbbbbbbbbbbb", "aaaaaaaaaaaa")[i % 2], "flip")
        finally:
            done.set()
        reader.result()  # re-raises whatever the reader hit
    assert set(seen) <= {"aaaaaaaaaaaa", "bbbbbbbbbbbb"} and len(seen) > 10


def test_promoting_an_unknown_version_is_refused(paths):
    with pytest.raises(ModelNotFound, match="no model version 'nope'.*digitflow models"):
        promote(paths, "nope", "by hand")
    with pytest.raises(ModelNotFound, match="no earlier champion"):
        rollback(paths)


def test_a_version_name_resolves_to_its_model(paths):
    assert resolve_model(paths, "aaaaaaaaaaaa") == paths.models / "aaaaaaaaaaaa" / "model.keras"


def test_no_model_at_all_says_what_to_do(tmp_path):
    with pytest.raises(ModelNotFound, match="run `digitflow train` first"):
        resolve_model(Paths(tmp_path), None)
