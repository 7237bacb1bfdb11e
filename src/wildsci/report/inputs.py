"""What ``wildsci report`` reads: the files each stage promises to write (docs/architecture.md, "File contracts").

- ``<run>/dataset/build_report.json``   the builder's stage counts, drops and dataset statistics;
- ``<run>/grpo/wildsci_metrics.jsonl`` one object per GRPO logging step (reward, accuracy, lengths, ...);
- ``<run>/eval/results.json`` + ``predictions.jsonl`` (+ ``results.md``, ``accuracy_vs_step.png``);
- ``<run>/demo_stages.json`` (``wildsci demo``'s stage times), when present.

Anything missing or damaged becomes one sentence in :attr:`RunInputs.notes` (shown in the report); nothing
missing is ever an error, because a report is also asked of runs that are only half finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS_FILE = "wildsci_metrics.jsonl"
DEMO_TIMINGS_FILE = "demo_stages.json"  # written by wildsci.demo; shown when present


@dataclass
class RunInputs:
    """Everything the report found for a run, plus one sentence per thing it did not find."""

    run_dir: Path
    dataset_dir: Path | None = None
    build_report: dict[str, Any] | None = None
    metrics_path: Path | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    eval_dir: Path | None = None
    results: dict[str, Any] | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    demo_stages: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        notes.append(f"could not read `{path}` ({str(e).splitlines()[0]}); that part of the report is left out")
        return None


def _read_jsonl(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; unreadable lines (e.g. the last line of a killed run) are counted, not fatal."""
    rows, bad, first_bad = [], 0, None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        notes.append(f"could not read `{path}` ({e}); that part of the report is left out")
        return []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad += 1
            first_bad = first_bad or i
    if bad:
        notes.append(f"`{path}`: skipped {bad} unreadable line(s) (first at line {first_bad})")
    return rows


def _clean_metrics(rows: list[dict[str, Any]], path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """One entry per step, in step order. A resumed run logs some steps twice: the later entry wins."""
    by_step: dict[int, dict[str, Any]] = {}
    dropped = 0
    for r in rows:
        step = r.get("step")
        if isinstance(step, bool) or not isinstance(step, int | float):
            dropped += 1
            continue
        by_step[int(step)] = r
    repeated = len(rows) - dropped - len(by_step)
    if dropped:
        notes.append(f"`{path}`: {dropped} line(s) without a numeric `step` were skipped")
    if repeated:
        notes.append(
            f"`{path}`: {repeated} step(s) were logged more than once (a resumed run); the last entry is used"
        )
    return [by_step[s] for s in sorted(by_step)]


def locate_inputs(
    run_dir: str | Path,
    dataset_dir: str | Path | None = None,
    grpo_dir: str | Path | None = None,
    eval_dir: str | Path | None = None,
) -> RunInputs:
    """Find the stage outputs under ``run_dir`` (``dataset/``, ``grpo/``, ``eval/``) or at the explicit paths."""
    run = Path(run_dir)
    inp = RunInputs(run_dir=run)
    notes = inp.notes

    ds = Path(dataset_dir) if dataset_dir else run / "dataset"
    if (ds / "build_report.json").is_file():
        inp.dataset_dir = ds
        inp.build_report = _read_json(ds / "build_report.json", notes)
        if inp.build_report is not None and not isinstance(inp.build_report, dict):
            notes.append(f"`{ds / 'build_report.json'}` is not a JSON object; dataset statistics are left out")
            inp.build_report = None
    else:
        notes.append(f"no dataset build report found in `{ds}` (expected `build_report.json` from `wildsci build`)")

    g = Path(grpo_dir) if grpo_dir else run / "grpo"
    candidates = [g] if g.is_file() else [g / METRICS_FILE]
    if not candidates[0].is_file() and g.is_dir():  # e.g. metrics written into a nested output folder
        candidates = sorted(g.rglob(METRICS_FILE), key=lambda p: p.stat().st_mtime, reverse=True)
    if candidates and candidates[0].is_file():
        inp.metrics_path = candidates[0]
        inp.metrics = _clean_metrics(_read_jsonl(candidates[0], notes), candidates[0], notes)
        if not inp.metrics:
            notes.append(f"`{candidates[0]}` holds no logged steps yet; training plots are left out")
    else:
        notes.append(f"no training metrics found in `{g}` (expected `{METRICS_FILE}` from `wildsci.grpo`)")

    e = Path(eval_dir) if eval_dir else run / "eval"
    if (e / "results.json").is_file():
        inp.eval_dir = e
        res = _read_json(e / "results.json", notes)
        inp.results = res if isinstance(res, dict) else None
        if (e / "predictions.jsonl").is_file():
            inp.predictions = _read_jsonl(e / "predictions.jsonl", notes)
        else:
            notes.append(f"no `predictions.jsonl` in `{e}`; response-behaviour plots are left out")
    else:
        notes.append(f"no eval results found in `{e}` (expected `results.json` from `wildsci eval`)")

    if (run / DEMO_TIMINGS_FILE).is_file():
        stages = _read_json(run / DEMO_TIMINGS_FILE, notes)
        if isinstance(stages, dict) and isinstance(stages.get("stages"), list):
            inp.demo_stages = [s for s in stages["stages"] if isinstance(s, dict) and s.get("name") != "report"]
    return inp
