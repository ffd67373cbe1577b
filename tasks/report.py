"""What a person sees on a run's page in the Prefect UI: markdown reports and tables."""

import base64
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def training_markdown(metadata: dict, plots: dict) -> str:
    m, s = metadata["metrics"], metadata["settings"]
    folder = Path(metadata["model_path"]).parent
    lines = [
        f"# Training report: {metadata['preset']} model `{metadata['model_version']}`",
        "",
        "| metric | value |", "|---|---|",
        f"| test accuracy | {m['test_accuracy']:.4f} |",
        f"| test loss | {m['test_loss']:.4f} |",
        f"| test images | {m['test_images']} |",
        f"| training images | {metadata['train_images']} |",
        f"| parameters | {metadata['params']:,} |",
        "",
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
    for name, entry in plots["files"].items():
        lines += [f"### {name}", "", f"![{name}]({data_uri(Path(entry['path']))})", ""]
    lines += ["## Files", "", f"- model folder: `{folder}`",
              *[f"- `{p.name}`" for p in sorted(folder.rglob("*")) if p.is_file()]]
    return "\n".join(lines)


def per_class_rows(per_class: pd.DataFrame) -> list[dict]:
    # Table artifacts take plain Python values only (numpy scalars raise TypeError).
    return [{"digit": int(r.digit), "precision": round(float(r.precision), 4),
             "recall": round(float(r.recall), 4), "f1": round(float(r.f1), 4),
             "support": int(r.support)} for r in per_class.itertuples()]


@task(name="publish-training-report", cache_policy=NO_CACHE)
def publish_training_report(metadata: dict, evaluated: dict, plots: dict) -> None:
    create_markdown_artifact(key=f"train-report-{metadata['preset']}",
                             markdown=training_markdown(metadata, plots),
                             description=f"test accuracy {metadata['metrics']['test_accuracy']:.4f}")
    per_class = pd.read_parquet(evaluated["files"]["per_class"]["path"])
    create_table_artifact(key=f"per-class-metrics-{metadata['preset']}", table=per_class_rows(per_class),
                          description=f"model {metadata['model_version']}")


def scoring_markdown(summary: dict) -> str:
    lines = [f"# Scoring report: `{summary['folder']}`", "",
             "| | |", "|---|---|",
             f"| model | `{summary['model_version']}` |",
             f"| images scored | {summary['scored']} |",
             f"| errors | {summary['errors']} |",
             f"| output | `{summary['output']}` |",
             f"| seconds | {summary['seconds']:.1f} |", "",
             "## Predictions by label", "", "| label | count |", "|---|---|",
             *[f"| {k} | {v} |" for k, v in summary["by_label"].items()]]
    if summary["error_reasons"]:
        lines += ["", "## Errors", "", "| reason | count |", "|---|---|",
                  *[f"| {k} | {v} |" for k, v in summary["error_reasons"].items()]]
    return "\n".join(lines)


@task(name="publish-scoring-report", cache_policy=NO_CACHE)
def publish_scoring_report(summary: dict) -> None:
    create_markdown_artifact(key="score-report", markdown=scoring_markdown(summary),
                             description=f"{summary['scored']} scored, {summary['errors']} errors")
