"""bench/RESULTS.md is what its scripts wrote: numbers recompute from the committed per-question files, sections
are replaced whole on a rerun, and a dirty tree cannot stamp a section with a commit that did not produce it."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
#: every sweep of bench/grpo_quality.py (its --section), each with its folder of per-question files
QUALITY_SECTIONS = sorted(p.name for p in (ROOT / "bench" / "results").glob("grpo_quality*") if p.is_dir())


def section(name: str) -> str:
    m = re.search(rf"<!-- BEGIN {name} -->(.*?)<!-- END {name} -->", RESULTS.read_text(), re.DOTALL)
    assert m, f"bench/RESULTS.md has no {name} section"
    return m.group(1)


def table_rows(text: str) -> dict[str, list[str]]:
    """First cell (setting name, backticks removed) -> the row's cells."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    return rows


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, c - h), min(1.0, c + h)


def test_the_main_quality_sweep_is_there():
    assert "grpo_quality" in QUALITY_SECTIONS


@pytest.mark.parametrize("name", QUALITY_SECTIONS)
def test_grpo_quality_numbers_recompute_from_per_question_files(name):
    text = section(name)
    rows = table_rows(text)
    folder = ROOT / "bench" / "results" / name
    files = sorted(folder.glob("*.jsonl"))
    assert {f.stem for f in files} == set(rows), "every table row has its per-question file and vice versa"
    base = {r["id"]: r["correct"] for r in load(folder / "base.jsonl") if r["rotation"] == 0}
    for f in files:
        recs = [r for r in load(f) if r["rotation"] == 0]
        cells = rows[f.stem]
        n = len(recs)
        readable = sum(r["status"] == "ok" for r in recs)
        correct = sum(r["correct"] for r in recs)
        assert all(r["correct"] == (r["pred"] == r["gold"]) for r in recs), f"{f.name}: correct != (pred == gold)"
        lo, hi = wilson(correct, n)
        letters = Counter(r["pred"] for r in recs if r["pred"])
        top_n = max(letters.values())
        assert cells[3].startswith(f"{readable}/{n} "), (f.stem, cells[3])
        acc = f"{correct}/{n} ({100 * correct / n:.1f}%) [{100 * lo:.1f}, {100 * hi:.1f}]"
        assert cells[4] == acc, (f.stem, cells[4], acc)
        assert cells[6].split()[1] == f"{top_n}/{n}" and letters[cells[6].split()[0]] == top_n, (f.stem, cells[6])
        assert cells[7] == " ".join(f"{c}:{letters.get(c, 0)}" for c in "ABCD"), (f.stem, cells[7])
        collapsed = top_n > 0.4 * n or readable < 0.9 * n
        assert cells[9] == ("yes" if collapsed else "no"), (f.stem, cells[9])
        if f.stem != "base":
            b = sum(base[r["id"]] and not r["correct"] for r in recs)
            c = sum(r["correct"] and not base[r["id"]] for r in recs)
            p = binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
            assert math.isclose(float(cells[8]), p, rel_tol=5e-3), (f.stem, cells[8], p)


def _script_copy(tmp_path: Path) -> Path:
    """A throwaway git checkout holding the bench scripts (committed), to exercise the commit checks."""
    repo = tmp_path / "kit"
    (repo / "bench").mkdir(parents=True)
    for name in ("_results.py", "grpo_quality.py"):
        shutil.copy(ROOT / "bench" / name, repo / "bench" / name)
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "bench"], check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], check=True)
    return repo


def _run(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "bench/grpo_quality.py", "--settings", "recipe"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_refuses_to_write_from_a_dirty_tree(tmp_path):
    repo = _script_copy(tmp_path)
    with (repo / "bench" / "grpo_quality.py").open("a") as fh:
        fh.write("# an uncommitted change\n")
    out = _run(repo)
    assert out.returncode != 0
    assert "uncommitted changes" in out.stderr and "--allow-dirty" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (repo / "bench" / "RESULTS.md").exists()


def test_earlier_results_do_not_make_the_tree_dirty(tmp_path):
    """A section written by one benchmark must not stop the next one on the same checkout."""
    repo = _script_copy(tmp_path)
    (repo / "bench" / "RESULTS.md").write_text("# Benchmark results\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "add", "bench/RESULTS.md"], check=True)
    subprocess.run([*git, "commit", "-qm", "results"], check=True)
    (repo / "bench" / "RESULTS.md").write_text("# Benchmark results\n\nnew section\n")
    out = _run(repo)
    assert "uncommitted changes" not in out.stderr, out.stderr
    assert "wildsci is imported from" in out.stderr  # the next check, reached because the tree counts as clean


def test_refuses_code_from_another_checkout(tmp_path):
    """A clean script checkout is not enough: the wildsci it imports must be the same commit's."""
    repo = _script_copy(tmp_path)  # no src/ here: wildsci comes from the installed kit
    out = _run(repo)
    assert out.returncode != 0 and "wildsci is imported from" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_rerun_replaces_its_section_and_files(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    import _results

    monkeypatch.setattr(_results, "RESULTS", tmp_path / "RESULTS.md")
    monkeypatch.setattr(_results, "RESULT_FILES", tmp_path / "results")
    (tmp_path / "RESULTS.md").write_text(_results.HEADER + "\n<!-- BEGIN other -->\nkeep me\n<!-- END other -->\n")
    run = _results.Run(command="python bench/x.py", commit="abc123", load_before=0.1)
    run.write("demo", "Demo", "first body", {"a.jsonl": [{"x": 1}], "stale.jsonl": [{"x": 2}]})
    run.write("demo", "Demo", "second body", {"a.jsonl": [{"x": 3}]})
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.count("<!-- BEGIN demo -->") == 1 and "second body" in text and "first body" not in text
    assert "keep me" in text and "commit: abc123" in text and "command: `python bench/x.py`" in text
    assert sorted(p.name for p in (tmp_path / "results" / "demo").iterdir()) == ["a.jsonl"]
    assert json.loads((tmp_path / "results" / "demo" / "a.jsonl").read_text()) == {"x": 3}


def test_load_note_says_shared_only_when_measured(monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    import _results

    monkeypatch.setattr(_results, "_load1", lambda: 0.05)
    idle = _results.Run(command="c", commit="abc", load_before=0.05)
    assert "No other load was measured" in idle.load_note(own_threads=1)
    busy = _results.Run(command="c", commit="abc", load_before=3.0)
    assert "Other jobs were running" in busy.load_note(own_threads=1)


@pytest.mark.parametrize("name", QUALITY_SECTIONS)
def test_letter_baseline_section_recomputes_from_per_question_files(name):
    rows = table_rows(section(f"{name}_letters"))
    folder = ROOT / "bench" / "results" / name
    assert {f.stem for f in folder.glob("*.jsonl")} == set(rows)
    for f in folder.glob("*.jsonl"):
        recs = [r for r in load(f) if r["rotation"] == 0]
        letters = Counter(r["pred"] for r in recs if r["pred"])
        top, top_n = max(sorted(letters.items()), key=lambda kv: kv[1])
        always = sum(r["gold"] == top for r in recs)
        correct = sum(r["correct"] for r in recs)
        cells = rows[f.stem]
        assert cells[1] == f"{top} {top_n}/{len(recs)}" and cells[3].startswith(f"{always}/{len(recs)} "), cells
        assert cells[4] == f"{correct - always:+d}", cells


def test_load_before_waits_for_a_finished_jobs_load_to_decay(monkeypatch):
    """A benchmark started right after another must not read the previous one's lingering load as a shared machine;
    a load that stays is still reported."""
    sys.path.insert(0, str(ROOT / "bench"))
    import _results

    decaying = iter([1.9, 1.2, 0.7, 0.3, 0.3])
    monkeypatch.setattr(_results, "_load1", lambda: next(decaying))
    assert _results.settled_load(wait_s=10, poll_s=0) == 0.3
    monkeypatch.setattr(_results, "_load1", lambda: 2.0)
    assert _results.settled_load(wait_s=0.05, poll_s=0.01) == 2.0


def test_verdict_names_a_setting_that_failed_only_on_readability():
    """A spread policy just under the readable bar is still collapsed by the table's rule; the words say why."""
    sys.path.insert(0, str(ROOT / "bench"))
    import grpo_quality

    base = {"n": 300, "readable": 223, "correct": 53}
    spread = {"readable": 269, "correct": 66, "p": 0.18, "collapsed": True, "top_gold": 68, "top_n": 76}
    one_letter = {"readable": 300, "correct": 65, "p": 0.2, "collapsed": True, "top_gold": 65, "top_n": 300}
    text = grpo_quality.verdict(base, {"spread": spread, "one": one_letter}, 300)
    assert "Every trained setting collapsed" in text
    assert "No letter above 40%, but under 90% readable: `spread` (269/300)." in text and "`one` (" not in text
