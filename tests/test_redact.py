"""The one redaction module: credentials found by name and value, by shape, and in any spelling of a flag."""

from __future__ import annotations

from wildsci.redact import REDACTED, is_secret_name, redact_text, scrub, scrub_env, secret_values


def test_scrub_env_redacts_secret_values_whatever_the_variable_is_called():
    env = {"hf_token": "hf_abcdefgh1234", "MY_API_KEY": "sk-zyxwvuts", "HF_HOME": "/home/me/.cache/hf", "X": "short"}
    text = "GET https://hub/api?t=hf_abcdefgh1234 failed (key sk-zyxwvuts) in /home/me/.cache/hf"
    assert scrub_env(text, env) == "GET https://hub/api?t=<redacted> failed (key <redacted>) in /home/me/.cache/hf"


def test_secret_values_come_from_every_spelling_of_a_flag_the_recipe_and_the_environment():
    argv = ["--hub_token", "value-one-1234", "--hub-token=value-two-1234", "--max_new_tokens", "512"]
    recipe = {"api_key": "value-three-12", "env": {"WANDB_API_KEY": "value-four-123"}, "max_new_tokens": 4096}
    found = secret_values(argv, recipe, env={"HUGGING_FACE_HUB_TOKEN": "value-five-123", "HF_HOME": "/x/y/z/w"})
    assert found == {"value-one-1234", "value-two-1234", "value-three-12", "value-four-123", "value-five-123"}


def test_names_that_hold_credentials_and_names_that_do_not():
    assert all(map(is_secret_name, ["hub_token", "--hub-token", "HF_TOKEN", "OPENAI_API_KEY", "db_password"]))
    assert not any(map(is_secret_name, ["max_new_tokens", "num_tokens", "tokenizer_name", "HF_HOME"]))


def test_scrub_also_catches_token_shapes_it_was_not_told_about():
    assert scrub("push with hf_" + "a" * 20 + " failed", []) == f"push with {REDACTED} failed"


def test_redact_text_blanks_values_after_secret_flags_and_keys_but_not_token_counts():
    text = "wildsci build r.yaml --generator.api_key sk-x1 --hub-token=abc --max_new_tokens 64\napi_key: 'k9'"
    out = redact_text(text)
    assert "sk-x1" not in out and "abc" not in out and "k9" not in out
    assert "--max_new_tokens 64" in out and out.count(REDACTED) == 3
