"""Schema, taxonomy, prompts, dataset I/O, model resolver, recipe loader and CLI of the foundation."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from wildsci_fixtures import make_rows, make_wildsci_dataset

from wildsci.dataset_io import load_wildsci
from wildsci.errors import UserError
from wildsci.models import ModelError, resolve_model
from wildsci.prompts import build_messages, format_question
from wildsci.recipes import RecipeError, from_dict, load_recipe, parse_overrides
from wildsci.schema import validate_row, voting_type
from wildsci.taxonomy import load_taxonomy


def test_taxonomy_has_9_disciplines_and_26_subdomains():
    tax = load_taxonomy()
    assert len(tax.disciplines) == 9
    assert len(tax.subdomains) == 26
    assert all(s.description for s in tax.subdomains)
    assert tax.match_field_labels(["astro-ph.EP"]).name == "Planetary science"
    assert tax.match_field_labels(["hep-ph"]).discipline == "Physics"
    assert tax.match_field_labels(["nothing known"]) is None


def test_fixture_rows_are_valid_and_validation_names_problems():
    row = make_rows(1)[0]
    assert validate_row(row) == []
    bad = dict(row, answer="K", voting_type="all_aligned", options=dict(row["options"], C=row["options"]["B"]))
    reasons = validate_row(bad)
    assert any("duplicate" in r for r in reasons)
    assert any("not one of the option letters" in r for r in reasons)
    assert validate_row({"question": "x"})[0].startswith("missing columns")


@pytest.mark.parametrize(
    "votes,gold,kind",
    [
        (["A"] * 8, "A", "all_aligned"),
        (["A"] * 5 + ["B"] * 3, "A", "majority_aligned"),
        (["A"] * 4 + ["B"] * 4, "A", "minority_aligned"),
        (["B"] * 5 + ["C"] * 3, "A", "majority_misaligned"),
        (["B", "C", "D", "", "", "E", "F", "G"], "A", "unaligned"),
    ],
)
def test_voting_type(votes, gold, kind):
    assert voting_type(votes, gold) == kind


def test_prompt_names_the_real_option_range():
    text = format_question("Q?", ["a", "b", "c", "d"])
    assert "D. d" in text and "A through D" in text and "E." not in text
    ten = format_question("Q?", {letter: f"o{letter}" for letter in "ABCDEFGHIJ"})
    assert "A through J" in ten
    assert build_messages("Q?", ["a", "b"])[0]["role"] == "system"


def test_dataset_roundtrip_through_load_dataset(tmp_path):
    make_wildsci_dataset(tmp_path / "ds", n_train=6, n_test=4)
    dd = load_wildsci(str(tmp_path / "ds"))
    assert set(dd) == {"train", "validation", "test"}
    row = dd["train"][0]
    assert validate_row(row) == []
    with pytest.raises(UserError, match="no split"):
        load_wildsci(str(tmp_path / "ds"), split="dev")
    with pytest.raises(UserError, match="no data"):
        load_wildsci(str(tmp_path))


def test_model_resolver(tmp_path, tiny_model):
    assert resolve_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"
    assert resolve_model(tiny_model) == tiny_model
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="unknown embedded"):
        resolve_model("embedded:nope")


def test_tiny_tokenizer_round_trips(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = "The answer is \\boxed{C}."
    assert tok.decode(tok(text)["input_ids"]) == text


@dataclasses.dataclass
class _Inner:
    model: str = dataclasses.field(default="m", metadata={"help": "model id"})


@dataclasses.dataclass
class _Recipe:
    name: str = dataclasses.field(metadata={"help": "run name"})
    lr: float = dataclasses.field(default=1e-5, metadata={"help": "learning rate"})
    steps: int = dataclasses.field(default=10, metadata={"help": "number of steps"})
    tags: list[str] = dataclasses.field(default_factory=list, metadata={"help": "tags"})
    inner: _Inner = dataclasses.field(default_factory=_Inner, metadata={"help": "nested"})


def test_recipe_errors_are_one_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nlr: 1e-5\nsteps: 3\ninner:\n  model: q\n")
    r = load_recipe(p, _Recipe, parse_overrides(["--steps", "5", "--inner.model=z"]))
    assert (r.lr, r.steps, r.inner.model) == (1e-5, 5, "z")
    cases = {
        "name: x\nstep: 3\n": "unknown key 'step' -- did you mean 'steps'?",
        "name: x\nsteps: three\n": "key 'steps' must be int, got 'three' (number of steps)",
        "lr: 1.0\n": "missing required key 'name' (run name)",
        "name: x\ninner:\n  modle: q\n": "unknown key 'inner.modle'",
        "name: [x\n": "invalid YAML at line",
    }
    for text, expected in cases.items():
        p.write_text(text)
        with pytest.raises(RecipeError) as e:
            load_recipe(p, _Recipe)
        assert expected in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(RecipeError, match="a list of str"):
        from_dict(_Recipe, {"name": "x", "tags": "a"}, "src")


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "wildsci.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("build", "recipes", "eval", "report", "model", "demo"):
        assert cmd in out.stdout


def test_cli_bad_recipe_is_one_line_no_traceback(tmp_path):
    bad = tmp_path / "data" / "x.yaml"
    bad.parent.mkdir()
    bad.write_text("a: [1\n")
    out = subprocess.run(
        [sys.executable, "-m", "wildsci.cli", "recipes", "check", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    assert "invalid YAML" in out.stdout


@dataclasses.dataclass
class _Backend:
    model: str = "m"


@dataclasses.dataclass
class _Generate:
    num_questions: int = 1


@dataclasses.dataclass
class _SectionedRecipe:
    generator: _Backend = dataclasses.field(default_factory=_Backend)
    generate: _Generate = dataclasses.field(default_factory=_Generate)


@pytest.mark.parametrize(
    "data,suggestion",
    [
        ({"generater": {"model": "x"}}, "generator"),  # the section that has a `model` key, not the closest spelling
        ({"generater": {"num_questions": 2}}, "generate"),
    ],
)
def test_a_misspelt_section_is_matched_by_the_keys_inside_it(data, suggestion):
    with pytest.raises(RecipeError, match=f"did you mean '{suggestion}'"):
        from_dict(_SectionedRecipe, data, "r.yaml")


# ------------------------------------------------------------------------------------ malloc in the process
#: a KV-cache-like workload: a tensor reallocated one step larger, 800 times (as generate() grows its cache)
_GROWING_CACHE = """
import resource, sys
if sys.argv[1] == "wildsci":
    import wildsci.cli  # what the `wildsci` command imports first
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    x = torch.zeros(8, 16, 1, 64)
    for _ in range(400):
        x = torch.cat([x, torch.ones(8, 16, 1, 64)], dim=2)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _plain_shell_env(**extra: str) -> dict[str, str]:
    """The environment of a shell that never ran `make`: no MALLOC_* variables."""
    import os

    return {**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **extra}


def _page_faults(how: str, **env: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _GROWING_CACHE, how], env=_plain_shell_env(**env), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def _require_glibc() -> None:
    from wildsci.process import _glibc

    if _glibc() is None:
        pytest.skip("glibc only: elsewhere the allocator is left alone")


def test_wildsci_keeps_freed_memory_in_the_process_without_make():
    """Page faults are counted, not timed: glibc's behaviour, the same on any CPU and at any load."""
    _require_glibc()
    untuned = _page_faults("wildsci", WILDSCI_MALLOC_TUNING="0")
    tuned = _page_faults("wildsci")
    assert tuned * 10 < untuned, (tuned, untuned)


def test_processes_wildsci_starts_inherit_the_settings_and_a_users_own_value_wins():
    _require_glibc()
    probe = (
        "import os, subprocess, sys, wildsci; "
        "print(subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"MALLOC_TOP_PAD_\"], "
        'os.environ["MALLOC_MMAP_THRESHOLD_"])\'], capture_output=True, text=True).stdout.strip())'
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], env=_plain_shell_env(MALLOC_TOP_PAD_="4096"), capture_output=True, text=True
    )
    assert run.stdout.strip() == "4096 33554432", run.stderr[-2000:]
