"""Stage 10 (--push): one atomic commit through a mocked ``HfApi`` boundary, and every failure as one line."""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError
from wildsci_fixtures import make_wildsci_dataset

from wildsci.builder import push as push_mod
from wildsci.builder.card import CardConfig, render_card
from wildsci.errors import UserError


class FakeApi:
    """Records the calls the real ``HfApi`` would make; ``fail`` makes upload_folder raise."""

    calls: list[tuple[str, dict]] = []
    fail: Exception | None = None

    def __init__(self, *args, **kwargs) -> None:
        assert "token" not in kwargs  # the token comes from the environment / login store, never from us

    def create_repo(self, repo_id, **kw):
        FakeApi.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kw):
        import fnmatch
        from pathlib import Path

        root = Path(kw["folder_path"])
        files = sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and any(fnmatch.fnmatch(str(p.relative_to(root)), pat) for pat in kw["allow_patterns"])
        )
        FakeApi.calls.append(("upload_folder", {**kw, "files": files}))
        if FakeApi.fail is not None:
            raise FakeApi.fail

        class Info:
            commit_url = f"https://huggingface.co/datasets/{kw['repo_id']}/commit/abc"

        return Info()


@pytest.fixture()
def dataset(tmp_path, monkeypatch):
    out = make_wildsci_dataset(tmp_path / "ds", n_train=6, n_test=2)
    render_card(out, {"splits": {"train": 6}}, "", CardConfig(), "t")
    (out / "build_report.json").write_text("{}")
    (out / ".wildsci_build").mkdir()
    (out / ".wildsci_build" / "llm_cache.sqlite").write_text("private cache")
    import huggingface_hub

    FakeApi.calls, FakeApi.fail = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_secret_token_value")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return out


def test_push_is_one_private_commit_with_the_dataset_files(dataset, capsys):
    url = push_mod.push_dataset(dataset, "me/wildsci-test")
    assert url.endswith("/commit/abc")
    names = [c[0] for c in FakeApi.calls]
    assert names == ["create_repo", "upload_folder"]  # one commit, after the repo exists
    create = FakeApi.calls[0][1]
    assert create == {"repo_id": "me/wildsci-test", "repo_type": "dataset", "private": True, "exist_ok": True}
    upload = FakeApi.calls[1][1]
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


def test_public_when_the_recipe_says_so(dataset):
    push_mod.push_dataset(dataset, "me/x", private=False)
    assert FakeApi.calls[0][1]["private"] is False


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
    FakeApi.fail = HfHubHTTPError("403 Forbidden", response=response)
    with pytest.raises(UserError, match="refused the token"):
        push_mod.push_dataset(dataset, "me/x")
    FakeApi.fail = httpx.ConnectError("Name or service not known")
    with pytest.raises(UserError, match="unreachable") as e:
        push_mod.push_dataset(dataset, "me/x")
    assert "\n" not in str(e.value)
