"""What a person sees on a run's page in the Prefect UI: markdown reports and tables."""

import base64
import io
from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.mnist import FROZEN_TEST_SET
from tasks.records import Evaluation, GateDecision, StepRecord, TrainedModel, Trial, YourDigits


def png_data_uri(png: bytes) -> str:
    """A PNG inlined in markdown: the UI renders it with no file server behind it."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def file_link(path: Path, text: object = None) -> str:
    """A markdown link to a local file (file:// URL): copy it, or open it on this machine."""
    return f"[{text or path}]({path.resolve().as_uri()})"


def gate_lines(decision: GateDecision) -> list[str]:
    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    champion = f"`{decision.champion}`" if decision.champion else "none"
    frozen = " (MNIST's own, frozen)" if decision.test_set == FROZEN_TEST_SET else ""
    return [
        "## Champion gate",
        "",
        f"**{'Promoted to champion' if decision.promote else 'Not promoted'}**: {decision.reason}.",
        "",
        f"Test set `{decision.test_set}`{frozen}.",
        "",
        *([f"Your test set `{decision.your_test_set}`; decided by {decision.decided_by}.", ""]
          if decision.your_test_set else []),
        "| | model | MNIST test accuracy | MNIST test loss | your test accuracy |",
        "|---|---|---|---|---|",
        f"| challenger (this run) | | {number(decision.challenger_accuracy)} | "
        f"{number(decision.challenger_loss)} | {number(decision.challenger_your_accuracy)} |",
        f"| champion before | {champion} | {number(decision.champion_accuracy)} | "
        f"{number(decision.champion_loss)} | {number(decision.champion_your_accuracy)} |",
        "",
    ]


def your_digits_lines(yours: YourDigits | None, evaluated: dict[str, Evaluation]) -> list[str]:
    """Your spans, and the model on your test set beside MNIST's."""
    if yours is None:
        return ["## Your digits", "", "No labelled spans in data/labelled: trained on MNIST alone "
                "(`digitflow label FOLDER --labels CSV` makes one).", ""]
    lines = ["## Your digits", "",
             f"{yours.train_images} pictures for training, {yours.test_images} in your test set "
             f"(chosen by each picture's SHA-256), from {len(yours.spans)} spans:", "",
             *[f"- {line}" for line in yours.summaries], ""]
    if yours.conflicts:
        lines += ["Left out, the same picture with two labels:", "",
                  *[f"- {c}" for c in yours.conflicts], ""]
    if yours.broken:
        lines += ["Broken files (not used):", "", *[f"- `{b}`" for b in yours.broken[:20]], ""]
    lines += ["| test set | images | accuracy | loss |", "|---|---|---|---|",
              *[f"| {'MNIST' if name == 'mnist' else 'yours'} | {e.images} | {e.accuracy:.4f} | "
                f"{e.loss:.4f} |" for name, e in evaluated.items()], ""]
    if "yours" in evaluated:
        e = evaluated["yours"]
        lines += ["### Your test set, per digit", "",
                  "| digit | precision | recall | f1 | support |", "|---|---|---|---|---|",
                  *[f"| {r['digit']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
                    f"{r['support']} |" for r in e.per_class], "",
                  "### Your test set, confusion matrix (rows: true digit, columns: predicted)", "",
                  "| | " + " | ".join(map(str, range(10))) + " |", "|---" * 11 + "|",
                  *[f"| **{d}** | " + " | ".join(map(str, row)) + " |"
                    for d, row in enumerate(e.confusion)], ""]
    return lines


def calibration_lines(calibration: StepRecord) -> list[str]:
    """Temperature, threshold and calibration error before and after, with the diagram."""
    c = calibration.info["calibration"]

    def share(value: float | None) -> str:
        return "—" if value is None else f"{value:.2%}"

    png = calibration.path("reliability").read_bytes()
    return [
        "## Confidence: calibration and the review flag", "",
        f"Temperature **{c['temperature']:.3f}** (the logits are divided by it: {c['method']}); "
        f"predictions under calibrated confidence **{c['threshold']:.4f}** are flagged for review "
        f"(`review` in the prediction table).", "",
        "| set | images | ECE before | ECE after | flagged | accepted correct | errors flagged |",
        "|---|---|---|---|---|---|---|",
        *[f"| {name} | {f['images']} | {f['ece_before']:.4f} | {f['ece_after']:.4f} | "
          f"{share(f['review_rate'])} | {share(f['accepted_accuracy'])} | "
          f"{share(f['errors_flagged'])} |"
          for name, f in [("validation", c["validation"]), *c["tests"].items()]], "",
        f"![reliability]({png_data_uri(png)})", ""]


def training_markdown(metadata: dict, plots: StepRecord, calibration: StepRecord,
                      decision: GateDecision, yours: YourDigits | None,
                      evaluated: dict[str, Evaluation], summary: str) -> str:
    m, s = metadata["metrics"], metadata["settings"]
    folder = Path(metadata["model_path"]).parent
    lines = [
        f"# Training report: {metadata['architecture']} model `{metadata['model_version']}`",
        "",
        *gate_lines(decision),
        "## Metrics",
        "",
        "| metric | value |", "|---|---|",
        f"| test accuracy | {m['test_accuracy']:.4f} |",
        f"| test loss | {m['test_loss']:.4f} |",
        f"| test images | {m['test_images']} |",
        f"| training images | {metadata['train_images']} |",
        f"| parameters | {metadata['params']:,} |",
        "",
        *your_digits_lines(yours, evaluated),
        *calibration_lines(calibration),
        "## Settings",
        "",
        "| setting | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in s.items()],
        f"| data fingerprint | `{metadata['data_fingerprint']}` (verified: {metadata['data_verified']}) |",
        "",
        "## Timings (seconds)",
        "",
        "| step | seconds |", "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in metadata["timings_seconds"].items()],
        "",
        "## Plots",
        "",
    ]
    for name, path in plots.paths().items():
        png = path.read_bytes()
        lines += [f"### {name}", "", f"![{name}]({png_data_uri(png)})", ""]
    lines += ["## Model", "", "```", summary, "```", ""]
    lines += ["## Files", "", f"- model folder: {file_link(folder)}",
              *[f"- {file_link(p, p.relative_to(folder))}" for p in sorted(folder.rglob("*"))
                if p.is_file()]]
    return "\n".join(lines)


@task(name="publish-training-report", cache_policy=NO_CACHE)
def publish_training_report(metadata: dict, trained: TrainedModel,
                            evaluated: dict[str, Evaluation], plots: StepRecord,
                            calibration: StepRecord, decision: GateDecision,
                            yours: YourDigits | None, models: list[dict]) -> None:
    name = trained.preset or "sweep"
    mnist = evaluated["mnist"]
    on_yours = f", yours {evaluated['yours'].accuracy:.4f}" if "yours" in evaluated else ""
    create_markdown_artifact(key=f"train-report-{name}",
                             markdown=training_markdown(metadata, plots, calibration, decision,
                                                        yours, evaluated,
                                                        trained.summary_path.read_text()),
                             description=f"test accuracy {mnist.accuracy:.4f}{on_yours}; "
                                         f"{'promoted' if decision.promote else 'not promoted'}")
    create_table_artifact(key=f"per-class-metrics-{name}", table=mnist.per_class,
                          description=f"model {trained.version}")
    if "yours" in evaluated:
        create_table_artifact(key=f"per-class-metrics-yours-{name}",
                              table=evaluated["yours"].per_class,
                              description=f"model {trained.version} on your test set")
    # One key across retrains: its versions on the Artifacts page are the accuracy history.
    create_table_artifact(key="model-versions", table=[
        {"version": m["version"], "preset": m["preset"], "created_at": m["created_at"],
         "test_accuracy": round(float(m["test_accuracy"]), 4), "champion": bool(m["champion"])}
        for m in models], description=f"{len(models)} versions; latest accuracy {mnist.accuracy:.4f}")


@task(name="publish-sweep-report", cache_policy=NO_CACHE)
def publish_sweep_report(table: dict, best: Trial) -> None:
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for row in table["table"]]
    create_table_artifact(key="sweep-trials", table=rows,
                          description=f"{len(rows)} trials, best validation accuracy first; trial "
                                      f"{best.number} ({best.val_accuracy:.4f}) goes on to the "
                                      f"test set and the gate. Table: {table['path']}")


def thumbnails(file: Path) -> tuple[str, str]:
    """Data URIs of the picture as it is and of the 28×28 input the model received."""
    from PIL import Image  # with scipy (tasks.images), only for a scoring report: 0.5 s of imports

    from tasks.images import decode, grayscale, preprocess

    data = file.read_bytes()
    # Through grayscale(): transparent pictures shown on paper, not on black.
    picture = Image.fromarray((grayscale(decode(data)) * 255).astype(np.uint8))
    picture.thumbnail((84, 84))
    seen = Image.fromarray((preprocess(data) * 255).astype(np.uint8)).resize((84, 84), Image.NEAREST)
    return png_uri(picture), png_uri(seen)


def png_uri(image) -> str:
    out = io.BytesIO()
    image.save(out, "PNG")
    return png_data_uri(out.getvalue())


def scoring_markdown(summary: dict, folder: Path) -> str:
    lines = [f"# Scoring report: `{summary['folder']}`", "",
             "| | |", "|---|---|",
             f"| model | `{summary['model_version']}` |",
             f"| image files found | {summary['found']} |",
             f"| skipped (already scored by this model) | {summary['skipped']} |",
             f"| scored | {summary['scored']} |",
             f"| errors | {summary['errors']} |",
             f"| flagged for review (calibrated confidence under the model's threshold) | "
             f"{summary['flagged']} |",
             f"| mean confidence | {summary['mean_confidence']} |",
             *([f"| accuracy against labels | {summary['accuracy']} |"] if "accuracy" in summary else []),
             f"| output | {file_link(Path(summary['output']))} |",
             f"| seconds | {summary['seconds']:.1f} |", "",
             "## Predictions by label", "", "| label | count |", "|---|---|",
             *[f"| {k} | {v} |" for k, v in summary["by_label"].items()], "",
             "## Confidence", "", "| confidence | images |", "|---|---|",
             *[f"| {k} | {v} |" for k, v in summary["confidence_bins"].items()]]
    drift = summary.get("drift") or {}
    if drift.get("scores"):
        from tasks.drift import drift_figure, drift_markdown
        from tasks.plots import png_bytes

        lines += ["", *drift_markdown(drift), "",
                  f"Compared with the nearest of the champion's test sets: {drift['reference']}.", "",
                  f"![drift]({png_data_uri(png_bytes(drift_figure(drift)))})"]
    elif drift.get("note"):
        lines += ["", "## Drift", "", drift["note"]]
    if summary["error_reasons"]:
        lines += ["", "## Errors", "", "| reason | count |", "|---|---|",
                  *[f"| {k} | {v} |" for k, v in summary["error_reasons"].items()]]
    if summary["review"]:
        lines += ["", "## Review: flagged predictions first, least confident first", "",
                  "| image | model input | predicted | confidence | top 3 | file |",
                  "|---|---|---|---|---|---|"]
        for row in summary["review"]:
            try:
                picture, seen = thumbnails(folder / row["path"])
            except (OSError, ValueError):
                continue  # moved or changed since it was scored
            top = ", ".join(f"{d}: {p:.2f}" for d, p in row["top3"])
            lines.append(f"| ![{row['path']}]({picture}) | ![input]({seen}) | **{row['label']}**"
                         f"{' (flagged)' if row.get('flagged') else ''} | "
                         f"{row['confidence']:.2f} | {top} | `{row['path']}` |")
    return "\n".join(lines)


@task(name="publish-scoring-report", cache_policy=NO_CACHE)
def publish_scoring_report(summary: dict) -> None:
    create_markdown_artifact(key="score-report", markdown=scoring_markdown(summary, Path(summary["folder"])),
                             description=f"{summary['scored']} scored, {summary['errors']} errors, "
                                         f"{summary['skipped']} skipped")


@task(name="tag-run", cache_policy=NO_CACHE)
def tag_run(tags: list[str]) -> None:
    """Add tags to the current flow run, so the runs list can be filtered by preset or model."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id)
        client.update_flow_run(flow_run.id, tags=sorted(set(current.tags) | set(tags)))
