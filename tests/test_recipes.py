"""Recipe kinds through the CLI: a recipe of the wrong kind gets the right command; any stored recipe is checked."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from wildsci.cli import main
from wildsci.recipes import RecipeError, from_dict


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_data_recipe_given_to_eval_names_the_build_command(capsys, repo_root):
    err = _error(capsys, ["eval", str(repo_root / "recipes/data/demo.yaml")])
    assert "this is a data recipe, not an eval recipe" in err and "wildsci build" in err


def test_an_eval_recipe_given_to_build_names_the_eval_command(capsys, repo_root):
    err = _error(capsys, ["build", str(repo_root / "recipes/eval/demo.yaml"), "--dry-run"])
    assert "this is an eval recipe, not a data recipe" in err and "wildsci eval" in err


def test_the_kind_of_a_recipe_stored_elsewhere_comes_from_its_keys(capsys, repo_root, tmp_path):
    copy = tmp_path / "my_eval.yaml"
    shutil.copy(repo_root / "recipes/eval/demo.yaml", copy)
    assert main(["recipes", "check", str(copy)]) == 0
    assert f"ok      {copy} (eval)" in capsys.readouterr().out


def test_recipes_check_takes_an_explicit_kind(capsys, repo_root, tmp_path):
    copy = tmp_path / "x.yaml"
    shutil.copy(repo_root / "recipes/data/demo.yaml", copy)
    assert main(["recipes", "check", "--kind", "eval", str(copy)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_a_recipe_whose_kind_cannot_be_told_says_how_to_name_it(capsys, tmp_path):
    odd = tmp_path / "odd.yaml"
    odd.write_text("nothing_we_know: 1\n")
    assert main(["recipes", "check", str(odd)]) == 1
    assert "pass --kind" in capsys.readouterr().out


@dataclasses.dataclass
class _Backend:
    model: str = "m"


@dataclasses.dataclass
class _Generate:
    num_questions: int = 1


@dataclasses.dataclass
class _Recipe:
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
        from_dict(_Recipe, data, "r.yaml")
