"""The ``wildsci`` CLI: recipe kinds (the wrong kind names the right command, recipes stored anywhere are checked),
error lines without credentials."""

from __future__ import annotations

import shutil

from wildsci.cli import main


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


def test_an_error_line_never_shows_a_credential_from_the_command_line_or_environment(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "planted-env-token-123")
    missing = tmp_path / "planted-env-token-123" / "r.yaml"  # the value even turns up inside a path
    assert main(["build", str(missing), "--generator.api_token", "planted-flag-token-456"]) == 2
    err = capsys.readouterr().err
    assert "planted" not in err and "<redacted>" in err


def test_wildsci_model_refuses_what_does_not_resolve_to_a_loadable_model(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{")
    for ref, expected in [
        ("nonsense:foo", "unknown model scheme 'nonsense:'"),
        ("embedded:nope", "unknown embedded model 'nope'"),
        ("not a model", "is neither a local folder nor a Hub id"),
        ("no-org/no-such-model", "must be in the local cache"),
        (str(tmp_path / "junk"), "is not a valid JSON file"),
        (str(tmp_path / "missing"), "no such model folder"),
    ]:
        err = _error(capsys, ["model", ref])
        assert err.startswith("wildsci: error: ") and expected in err, err


def test_wildsci_model_prints_the_folder_of_a_loadable_model(capsys, tiny_model):
    assert main(["model", "tiny:qwen2"]) == 0
    assert capsys.readouterr().out.strip() == tiny_model
