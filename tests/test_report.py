"""``wildsci report`` on inputs that follow docs/architecture.md exactly, on partial runs, and on broken files.

The synthetic run below is written key for key from the file contracts (build_report.json,
wildsci_metrics.jsonl, results.json, predictions.jsonl), with a policy that learns over the steps, so each
plot has something to show. The real chain is exercised by tests/test_demo.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path

import pytest
from eval_helpers import unwritable_dir
from wildsci_fixtures import assert_png_nontrivial

from wildsci.answers import LETTERS, letter_share
from wildsci.cli import main
from wildsci.metrics import Guards
from wildsci.report import write_report
from wildsci.taxonomy import load_taxonomy

DISCIPLINES = list(load_taxonomy().disciplines)
GUARD = (
    "{pct}% of completions were cut off at max_completion_length (128 tokens); truncated answers get no reward, so "
    "the run learns little -- raise max_completion_length or ask for shorter reasoning"
)


def write_build_report(ds: Path) -> None:
    ds.mkdir(parents=True)
    per_disc = {d: 10 + 3 * i for i, d in enumerate(DISCIPLINES)}
    report = {
        "recipe": {"name": "demo"},
        "recipe_hash": "abc123def456",
        "stages": [
            {"name": "ingest", "in": 40, "out": 36, "drops": {"too_short": 4}},
            {"name": "generate", "in": 36, "out": 180, "drops": {"invalid_json": 6}},
            {"name": "options", "in": 180, "out": 170, "drops": {"duplicate_options": 10}},
            {"name": "vote", "in": 170, "out": 170, "drops": {}},
            {"name": "filter", "in": 170, "out": 150, "drops": {"all_aligned": 15, "unaligned": 5}},
            {"name": "dedup", "in": 150, "out": 145, "drops": {"near_duplicate": 5}},
            {"name": "decontaminate", "in": 145, "out": 144, "drops": {"contaminated:mmlu_pro": 1}},
            {"name": "split", "in": 144, "out": 144, "drops": {}},
        ],
        "drops": {"too_short": 4, "invalid_json": 6, "duplicate_options": 10, "all_aligned": 15},
        "letter_distribution": {letter: 12 + i % 4 for i, letter in enumerate(LETTERS)},
        "voting_types": {"majority_aligned": 80, "minority_aligned": 40, "majority_misaligned": 24},
        "per_discipline": per_disc,
        "per_subdomain": {s.name: 5 for s in load_taxonomy().subdomains},
        "decontamination": {
            "mmlu_pro": {"checked": 12032, "removed": 1},
            "gpqa_diamond": {"checked": 198, "removed": 0},
        },
        "splits": {"train": 120, "validation": 8, "test": 16},
        "llm_calls": {"made": 420, "cached": 0},
        "versions": {"transformers": "5.24"},
        "git_sha": "a89cd94",
    }
    (ds / "build_report.json").write_text(json.dumps(report))
    (ds / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# demo dataset\n")


def metrics_rows(n_steps: int = 40, seed: int = 0, collapse_from: int | None = None) -> list[dict]:
    """Rows of wildsci_metrics.jsonl; from step ``collapse_from`` on, the policy answers "A" to everything, and the
    real letter guard of wildsci.metrics computes the per-step letter keys and its warnings."""
    rng = random.Random(seed)
    guards = Guards()
    rows = []
    for step in range(1, n_steps + 1):
        p = 0.1 + 0.5 * step / n_steps  # the policy learns
        per = {}
        letters, gold = {}, {}
        for d in rng.sample(DISCIPLINES, 4):
            n = 2
            acc = sum(rng.random() < p for _ in range(n)) / n
            per[d] = {
                "n": n,
                "accuracy": acc,
                "reward": acc + 0.1,
                "unparseable_rate": 0.5 * (1 - p),
                "completion_length": 100 + step + rng.random() * 20,
            }
        for _ in range(8):
            g = rng.choice(LETTERS)
            gold[g] = gold.get(g, 0) + 1
            c = g if rng.random() < p else rng.choice("ABCD")
            if collapse_from is not None and step >= collapse_from:
                c = "A"
            letters[c] = letters.get(c, 0) + 1
        row = {
            "step": step,
            "epoch": step / n_steps,
            "loss": 0.01 * rng.random(),
            "reward": p + 0.1 * rng.random(),
            "reward_std": 0.3,
            "accuracy": p,
            "format_rate": min(1.0, 2 * p),
            "unparseable_rate": 0.6 * (1 - p),
            "completion_length": 120 + 2 * step,
            "clipped_ratio": 0.05 + 0.002 * step,
            "frac_reward_zero_std": 0.4,
            "learning_rate": 1e-6 * (1 - step / n_steps),
            "per_discipline": per,
            "letters": letters,
            "gold_letters": gold,
            "warnings": [f"step {step}: " + GUARD.format(pct=50 + step)] if 3 <= step <= 7 else [],
        }
        row.update(letter_share(letters, gold))
        collapse = guards.one_letter(step, row)
        row["warnings"] += [collapse] if collapse else []
        if step == 5:
            del row["loss"]  # keys a step cannot compute are omitted (contract)
        rows.append(row)
    return rows


def write_eval(ev: Path, permutations: bool = True, seed: int = 0) -> None:
    rng = random.Random(seed)
    ev.mkdir(parents=True)
    models = [{"name": "base", "path": "/m/base", "step": 0}, {"name": "checkpoint-40", "path": "/m/grpo", "step": 40}]
    tasks = ["wildsci_test", "mmlu_pro", "gpqa_diamond"]
    preds, scores = [], {}
    for m, skill in (("base", 0.2), ("checkpoint-40", 0.45)):
        scores[m] = {}
        rng_m = random.Random(seed)  # same questions for both models
        for t in tasks:
            n_opt = 10 if t != "gpqa_diamond" else 4
            rows = []
            for i in range(30):
                gold = LETTERS[rng_m.randrange(n_opt)]
                disc = DISCIPLINES[i % len(DISCIPLINES)] if t == "wildsci_test" else ""
                r = rng.random()
                pred = gold if r < skill else (None if r > 0.9 else LETTERS[rng.randrange(n_opt)])
                rows.append(
                    {
                        "model": m,
                        "task": t,
                        "question_id": f"{t}-{i}",
                        "discipline": disc,
                        "gold": gold,
                        "pred": pred,
                        "correct": pred == gold,
                        "completion_tokens": int(rng.gauss(150 + 100 * skill, 30)),
                    }
                )
            preds += rows
            per = {}
            for r in rows:
                if r["discipline"]:
                    per.setdefault(r["discipline"], []).append(r["correct"])
            scores[m][t] = {
                "accuracy": sum(r["correct"] for r in rows) / len(rows),
                "extraction_rate": sum(r["pred"] is not None for r in rows) / len(rows),
                "n": len(rows),
                "per_discipline": {d: {"accuracy": sum(v) / len(v), "n": len(v)} for d, v in per.items()},
            }
    results = {"models": models, "tasks": tasks, "scores": scores}
    if permutations:
        uni = {letter: 0.1 for letter in LETTERS}
        results["permutations"] = {
            m: {
                "mmlu_pro": {
                    "k": 4,
                    "accuracy": 0.3,
                    "consistency": c,
                    "gold_letter_distribution": uni,
                    "letter_distribution": {**uni, "A": 0.3, "B": 0.0},
                }
            }
            for m, c in (("base", 0.4), ("checkpoint-40", 0.6))
        }
    (ev / "results.json").write_text(json.dumps(results))
    (ev / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    (ev / "results.md").write_text("| model | wildsci_test |\n|---|---|\n| base | 20% |\n")


def make_run(root: Path) -> Path:
    run = root / "run"
    write_build_report(run / "dataset")
    (run / "grpo").mkdir(parents=True)
    with open(run / "grpo" / "wildsci_metrics.jsonl", "w") as fh:
        for r in metrics_rows(collapse_from=30):
            fh.write(json.dumps(r) + "\n")
    write_eval(run / "eval")
    stages = [
        {"name": "build", "status": "done", "seconds": 61.5, "command": "wildsci build recipes/data/demo.yaml"},
        {"name": "grpo", "status": "done", "seconds": 300.2, "command": "accelerate launch -m wildsci.grpo"},
        {"name": "report", "status": "running", "command": "wildsci report runs/demo"},
    ]
    (run / "demo_stages.json").write_text(json.dumps({"small": False, "stages": stages}))
    return run


SECTIONS = (
    "## Summary",
    "## Inputs",
    "## 1. Dataset",
    "### Pipeline stages",
    "### Decontamination",
    "## 2. Training dynamics (GRPO)",
    "### Reward and accuracy",
    "### Per discipline",
    "### Completion length, clipping and unparseable answers",
    "### Answer letters during training",
    "## 3. Response behaviours",
    "### Completion length",
    "### Answer letters vs gold",
    "### How often the answer changes",
    "## 4. Generalization (evaluation)",
    "### Option-order permutations",
    "## Stage times (`wildsci demo`)",
)
PLOTS = {
    "dataset_funnel", "dataset_stats", "train_reward_accuracy", "train_per_discipline", "train_length_rates",
    "train_loss_lr", "train_letters", "eval_completion_length", "eval_letters", "eval_answer_changes",
    "eval_accuracy", "eval_per_discipline", "eval_permutations", "train_letter_collapse",
}  # fmt: skip


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One synthetic run with every input, reported once through the CLI (rendering is the slow part)."""
    run = make_run(tmp_path_factory.mktemp("full"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(run)]) == 0
    assert f"report: {run / 'report.md'}" in out.getvalue()
    return run


def test_full_report_every_section_and_plot(full_run):
    run = full_run
    md = (run / "report.md").read_text()
    for heading in SECTIONS:
        assert heading in md, heading
    assert "could not be drawn" not in md
    # guard warnings come before everything else, grouped, with the steps they fired on and the latest text
    assert md.index("Training warnings") < md.index("## Summary")
    assert md.count("were cut off at max_completion_length") == 1, "one line per kind of warning"
    assert "5 logged steps, 3–7" in md and "step 7: " + GUARD.format(pct=57) + " *(latest of 5)*" in md
    # numbers come from the inputs
    scores = json.loads((run / "eval" / "results.json").read_text())["scores"]
    a, b = scores["base"]["wildsci_test"]["accuracy"], scores["checkpoint-40"]["wildsci_test"]["accuracy"]
    summary = next(line for line in md.splitlines() if line.startswith("- **Evaluation (base → checkpoint-40):**"))
    assert f"wildsci_test {100 * a:.1f}% [" in summary and f"→ {100 * b:.1f}% [" in summary
    assert f": {100 * (b - a):+.1f} pt [" in summary
    assert "| mmlu_pro | 12032 | 1 |" in md
    assert "| base | 0 |" in md and "| checkpoint-40 | 40 |" in md
    assert "| decontaminate | 145 | 144 | contaminated:mmlu_pro: 1 |" in md
    assert "[`eval/results.md`](eval/results.md)" in md
    assert "[`dataset/README.md`](dataset/README.md)" in md
    assert "| grpo | done | 300 s | `accelerate launch -m wildsci.grpo` |" in md and "| report |" not in md
    made = {p.stem for p in (run / "plots").glob("*.png")}
    assert made == PLOTS
    for name in PLOTS:
        assert f"(plots/{name}.png)" in md
        assert_png_nontrivial(run / "plots" / f"{name}.png")


def test_answer_change_counts_match_predictions(full_run):
    run = full_run
    preds = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    base = {(p["task"], p["question_id"]): p for p in preds if p["model"] == "base"}
    trained = [p for p in preds if p["model"] == "checkpoint-40" and p["task"] == "mmlu_pro"]
    wr = sum(1 for p in trained if p["correct"] and not base[(p["task"], p["question_id"])]["correct"])
    rw = sum(1 for p in trained if not p["correct"] and base[(p["task"], p["question_id"])]["correct"])
    changed = sum(1 for p in trained if p["pred"] != base[(p["task"], p["question_id"])]["pred"])
    assert 0 < wr and 0 < changed < 30
    md = (run / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| mmlu_pro | 30 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == f"{100 * changed / 30:.1f}%"
    assert int(cells[3]) == wr and int(cells[4]) == rw


def test_missing_inputs_are_stated_never_crash(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    path = write_report(run)
    md = path.read_text()
    assert f"no eval results found in `{run / 'eval'}`" in md
    assert f"no training metrics found in `{run / 'grpo'}`" in md
    assert f"no dataset build report found in `{run / 'dataset'}`" in md
    assert "Nothing to summarise yet" in md
    assert list((run / "plots").glob("*.png")) == []

    # only training so far (a run in progress): training plots, the rest stated missing; stale plots removed
    (run / "plots" / "eval_accuracy.png").write_bytes(b"stale")
    (run / "grpo").mkdir()
    (run / "grpo" / "wildsci_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics_rows(12)))
    md = write_report(run).read_text()
    assert "### Reward and accuracy" in md and "no eval results found" in md
    made = {p.stem for p in (run / "plots").glob("*.png")}
    assert made == {"train_reward_accuracy", "train_per_discipline", "train_length_rates", "train_loss_lr",
                    "train_letters", "train_letter_collapse"}  # fmt: skip


def test_damaged_inputs_are_reported(tmp_path, capsys):
    run = tmp_path / "run"
    write_build_report(run / "dataset")
    (run / "grpo").mkdir()
    (run / "eval").mkdir()
    rows = metrics_rows(10)
    lines = [json.dumps(r) for r in rows] + [json.dumps(rows[-1] | {"reward": 9.0})]  # resumed: step 10 twice
    lines.insert(3, '{"step": 4, "reward": 0.')  # a line cut off by a killed process
    (run / "grpo" / "wildsci_metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "eval" / "results.json").write_text("{not json")
    md = write_report(run).read_text()
    assert "skipped 1 unreadable line(s) (first at line 4)" in md
    assert "1 step(s) were logged more than once" in md
    assert f"could not read `{run / 'eval' / 'results.json'}`" in md
    assert "### Reward and accuracy" in md and "### Pipeline stages" in md

    # a contract violation inside one file costs one section, says so (report and stderr), and keeps the rest
    rows[2]["per_discipline"] = ["Physics"]
    (run / "grpo" / "wildsci_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = write_report(run).read_text()
    assert "the training section could not be drawn: AttributeError" in md
    assert "### Pipeline stages" in md
    assert "wildsci report: warning: the training section could not be drawn" in capsys.readouterr().err


def test_missing_run_dir_is_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run directory" in err


def test_a_run_dir_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys):
    run = unwritable_dir(tmp_path)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"run directory {run} cannot be written" in err and "choose another" in err
    assert not (run / "report.md").exists()


def test_explicit_paths(tmp_path):
    src = tmp_path / "src"
    write_eval(src / "eval", permutations=False)
    (src / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics_rows(6)))
    out = tmp_path / "elsewhere"
    path = write_report(out, grpo_dir=src / "metrics.jsonl", eval_dir=src / "eval")
    md = path.read_text()
    assert "## 4. Generalization" in md and "| base | 0 |" in md and "### Reward and accuracy" in md
    assert "### Option-order permutations" not in md
    assert f"no dataset build report found in `{out / 'dataset'}`" in md
    assert "[`../src/eval/results.md`](../src/eval/results.md)" in md


@pytest.mark.parametrize("drop", ["per_discipline", "letters", "warnings"])
def test_metrics_without_optional_keys(tmp_path, drop):
    run = tmp_path / "r"
    (run / "grpo").mkdir(parents=True)
    rows = [{k: v for k, v in r.items() if k != drop} for r in metrics_rows(8)]
    (run / "grpo" / "wildsci_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = write_report(run).read_text()
    assert "could not be drawn" not in md
    assert ("### Per discipline" in md) == (drop != "per_discipline")
    assert ("Training warnings" in md) == (drop != "warnings")


def test_letter_collapse_guard_is_shown(full_run):
    """The guard's per-step keys and warnings (written by wildsci.metrics) become a figure, a table and a line."""
    rows = [json.loads(x) for x in (full_run / "grpo" / "wildsci_metrics.jsonl").read_text().splitlines()]
    over = [r["step"] for r in rows if r["top_letter_share"] > 0.4 and r["top_letter_excess"] > 0]
    fired = [r["step"] for r in rows if any("onto one letter" in w for w in r["warnings"])]
    assert over and fired and min(fired) >= 30, "the fixture collapses onto A from step 30"
    md = (full_run / "report.md").read_text()
    section = md.split("### Letter collapse guard", 1)[1].split("\n## ", 1)[0]
    worst = max(rows, key=lambda r: r["top_letter_excess"])
    row = f"| {len(rows)} | {len(over)} | A: {100 * worst['top_letter_excess']:+.1f} pt | {worst['step']} |"
    assert row in section
    assert f"Guard fired on {len(fired)} logged step(s), {fired[0]}–{fired[-1]}" in section
    assert "(plots/train_letter_collapse.png)" in section
    assert "collapsing onto one letter" in md.split("## Summary", 1)[0], "and the warning heads the report"


def test_held_out_letter_table_counts_the_predictions(full_run):
    """`wildsci report` writes, per model, the most frequent answer letter on the evaluation questions."""
    from collections import Counter

    md = (full_run / "report.md").read_text()
    section = md.split("### Answer letters vs gold", 1)[1].split("\n#", 1)[0]
    preds = [json.loads(x) for x in (full_run / "eval" / "predictions.jsonl").read_text().splitlines() if x.strip()]
    for model in {p["model"] for p in preds}:
        letters = Counter(p["pred"] or "none" for p in preds if p["model"] == model)
        top, k = max(((c, n) for c, n in letters.items() if c != "none"), key=lambda x: (x[1], -ord(x[0])))
        assert f"| {model} | {sum(letters.values())} | {top} {100 * k / sum(letters.values()):.1f}% |" in section


def write_small_eval(ev: Path, right_before: int, right_after: int, n: int) -> None:
    """Base and trained on the same n questions: the first k answers right, the rest wrong."""
    ev.mkdir(parents=True)
    models = [{"name": "base", "path": "/m/b", "step": 0}, {"name": "final", "path": "/m/f", "step": 8}]
    preds, scores = [], {}
    for m, k in (("base", right_before), ("final", right_after)):
        for i in range(n):
            pred = {"model": m, "task": "wildsci", "question_id": f"q{i}", "discipline": "Physics", "gold": "B"}
            preds.append(pred | {"pred": "B" if i < k else "C", "correct": i < k, "completion_tokens": 40})
        per = {"Physics": {"accuracy": k / n, "n": n}}
        scores[m] = {"wildsci": {"accuracy": k / n, "extraction_rate": 1.0, "n": n, "per_discipline": per}}
    (ev / "results.json").write_text(json.dumps({"models": models, "tasks": ["wildsci"], "scores": scores}))
    (ev / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))


@pytest.mark.parametrize(
    "before,after,n,verdict",
    [
        (0, 5, 12, "n=12 < 30: too small to compare"),  # the "+41.7 pt"
        (12, 15, 40, "within noise (the interval spans 0)"),
        (10, 25, 40, "a gain"),
    ],
)
def test_small_or_noisy_differences_are_not_gains(tmp_path, before, after, n, verdict):
    run = tmp_path / "run"
    write_small_eval(run / "eval", before, after, n)
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("- **Evaluation (base → final):**"))
    delta = 100 * (after - before) / n
    assert f": {delta:+.1f} pt [" in line and line.endswith(f"{verdict} (paired, n={n})")
    if verdict != "a gain":
        assert "a gain" not in line
    table = next(x for x in md.splitlines() if x.startswith("| final | 8 |"))
    assert f"{100 * after / n:.1f}% [" in table and ("†" in table) == (n < 30)


def test_planted_token_reaches_no_output(tmp_path, capsys):
    """Tokens typed into commands, recipes and messages that a run records never reach report.md or a plot."""
    hf, sk, bare = "hf_" + "Plant3dT0kenValue" * 2, "sk-" + "plantedOpenAIkey" * 2, "Bare" + "PlantedSecret42"
    run = make_run(tmp_path)
    br = json.loads((run / "dataset" / "build_report.json").read_text())
    br["command"] = f"wildsci build recipes/data/demo.yaml --generator.api_key {sk} --push --hub_token={hf}"
    br["recipe"]["generator"] = {"api_key": bare}
    br["generator"] = "Qwen/Qwen2.5-32B-Instruct"
    (run / "dataset" / "build_report.json").write_text(json.dumps(br))
    stages = json.loads((run / "demo_stages.json").read_text())
    stages["stages"][0]["command"] = f"HF_TOKEN={hf} wildsci build recipes/data/demo.yaml --hub-token {bare}"
    (run / "demo_stages.json").write_text(json.dumps(stages))
    rows = metrics_rows(8)
    rows[3]["warnings"] = [f"step 4: push failed (Authorization: Bearer {hf}); OPENAI_API_KEY={sk} was rejected"]
    (run / "grpo" / "wildsci_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = json.loads((run / "eval" / "results.json").read_text())
    res["models"][1]["name"] = f"trained api_key: {bare}"  # a model name is free text too
    res["skipped"] = {"scieval": f"source /data/x.jsonl?token={hf} not found"}
    res["ran_on"] = {"backend": "server", "server_command": f"vllm serve m --api-key {sk}"}
    res["scores"][res["models"][1]["name"]] = res["scores"].pop("checkpoint-40")
    (run / "eval" / "results.json").write_text(json.dumps(res))

    assert main(["report", str(run)]) == 0
    out = capsys.readouterr()
    md = (run / "report.md").read_text()
    assert "Built with `wildsci build recipes/data/demo.yaml --generator.api_key <redacted> --push" in md
    assert "push failed" in md and "<redacted>" in md and "could not be drawn" not in md
    assert "Skipped tasks: scieval (source /data/x.jsonl?token=<redacted> not found)." in md
    assert "server_command `vllm serve m --api-key <redacted>`" in md
    outputs = [run / "report.md", *sorted((run / "plots").glob("*.png"))]
    assert len(outputs) > 10
    for secret in (hf, sk, bare):
        assert secret not in out.out + out.err
        for f in outputs:
            assert secret.encode() not in f.read_bytes(), f"{secret[:6]}... in {f.name}"


def test_letter_table_marks_a_policy_with_one_letter_above_40_percent():
    from collections import Counter

    from wildsci.report.generalization import letter_table

    gold = Counter({"A": 25, "B": 25, "C": 25, "D": 25})
    chosen = {
        "collapsed": Counter({"B": 41, "A": 20, "C": 20, "none": 19}),  # 41 % of all answers
        "balanced": Counter({"B": 40, "A": 30, "C": 30}),  # 40 % is the line, not above it
        "silent": Counter({"none": 5}),
    }
    lines = "\n".join(letter_table(gold, chosen)).splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ")}
    assert "B 41.0%" in rows["collapsed"] and rows["collapsed"].endswith("yes: one letter above 40.0% |")
    assert "B 40.0%" in rows["balanced"] and rows["balanced"].endswith("| no |")
    assert rows["silent"].endswith("no readable answer |")
