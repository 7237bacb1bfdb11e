"""Stage 10 (--push): one atomic commit through a mocked ``HfApi`` boundary, and every failure as one line."""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError
from wildsci_fixtures import FakeHfApi, make_wildsci_dataset

from wildsci.builder import push as push_mod
from wildsci.builder.card import CardConfig, render_card
from wildsci.errors import UserError


@pytest.fixture()
def dataset(tmp_path, monkeypatch):
    out = make_wildsci_dataset(tmp_path / "ds", n_train=6, n_test=2)
    render_card(out, {"splits": {"train": 6}}, "", CardConfig(), "t")
    (out / "build_report.json").write_text("{}")
    (out / ".wildsci_build").mkdir()
    (out / ".wildsci_build" / "llm_cache.sqlite").write_text("private cache")
    import huggingface_hub

    FakeHfApi.reset()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_secret_token_value")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return out


def test_push_is_one_private_commit_with_the_dataset_files(dataset, capsys):
    url = push_mod.push_dataset(dataset, "me/wildsci-test")
    assert url.endswith("/commit/abc")
    names = [c[0] for c in FakeHfApi.calls]
    assert names == ["create_repo", "upload_folder"]  # one commit, after the repo exists
    create = FakeHfApi.calls[0][1]
    assert create == {"repo_id": "me/wildsci-test", "repo_type": "dataset", "private": True, "exist_ok": True}
    upload = FakeHfApi.calls[1][1]
    assert upload["repo_type"] == "dataset" and upload["repo_id"] == "me/wildsci-test"
    assert upload["files"] == [
        "README.md",
        "build_report.json",
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
    ]
    out, err = capsys.readouterr()
    assert "hf_secret_token_value" not in out + err
    assert all("token" not in kw for kw in FakeHfApi.init_kwargs)  # the token comes from the login store, not us


def test_public_when_the_recipe_says_so(dataset):
    push_mod.push_dataset(dataset, "me/x", private=False)
    assert FakeHfApi.calls[0][1]["private"] is False


def test_failures_are_one_line(dataset, monkeypatch):
    import huggingface_hub

    with pytest.raises(UserError, match="hub_repo_id"):
        push_mod.push_dataset(dataset, None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        push_mod.push_dataset(dataset, "me/x")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(UserError, match="not logged in"):
        push_mod.push_dataset(dataset, "me/x")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "tok")
    response = httpx.Response(403, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))
    FakeHfApi.fail = HfHubHTTPError("403 Forbidden", response=response)
    with pytest.raises(UserError, match="refused the token"):
        push_mod.push_dataset(dataset, "me/x")
    FakeHfApi.fail = httpx.ConnectError("Name or service not known")
    with pytest.raises(UserError, match="unreachable") as e:
        push_mod.push_dataset(dataset, "me/x")
    assert "\n" not in str(e.value)
