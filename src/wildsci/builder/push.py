"""Stage 11, push (``--push``): publish the dataset folder to the Hub in ONE commit.

``create_repo(repo_type="dataset", private=True by default, exist_ok=True)`` then a single ``upload_folder``
(one ``create_commit`` under the hood): the Hub applies a commit atomically, so a push that fails half-way
(network, quota, a killed process) leaves the repo as it was -- never a README describing parquet files that
are not there. Only the dataset files travel (``README.md``, ``build_report.json``, ``data/*.parquet``); the
resume checkpoints and the LLM cache in ``.wildsci_build/`` stay local.

The token comes only from the environment (``HF_TOKEN``) or the ``hf auth login`` store, read by
``huggingface_hub`` itself; it is never passed around, printed or logged here.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import huggingface_hub
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from wildsci.errors import UserError, first_line

ALLOW_PATTERNS = ["README.md", "build_report.json", "data/*.parquet"]


def check_push(repo_id: str) -> None:
    """What can be known about a push before the build: offline mode and a missing token (checked before any call)."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):  # read now, not at import
        raise UserError(
            f"cannot push to {repo_id}: HF_HUB_OFFLINE=1 is set -- unset it (and check your network) to push"
        )
    if huggingface_hub.get_token() is None:
        raise UserError(
            f"cannot push to {repo_id}: not logged in to the Hugging Face Hub -- run `hf auth login` or set HF_TOKEN "
            "to a token with write access"
        )


def push_dataset(out_dir: str | Path, repo_id: str | None, private: bool = True, message: str | None = None) -> str:
    """Create (if needed) and update the Hub dataset repo ``repo_id`` from ``out_dir``; returns the commit URL."""
    out = Path(out_dir)
    if not repo_id:
        raise UserError("--push needs a Hub repo: set hub_repo_id in the recipe or pass --hub_repo_id my-org/name")
    if not (out / "README.md").is_file() or not list((out / "data").glob("*.parquet")):
        raise UserError(f"{out}: no built dataset to push (README.md + data/*.parquet) -- run the build first")
    check_push(repo_id)
    api = huggingface_hub.HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(out),
            repo_id=repo_id,
            repo_type="dataset",
            allow_patterns=ALLOW_PATTERNS,
            commit_message=message or f"wildsci build: update {repo_id}",
        )
    except OfflineModeIsEnabled:
        raise UserError(f"cannot push to {repo_id}: offline mode is enabled -- unset HF_HUB_OFFLINE") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise UserError(
                f"cannot push to {repo_id}: the Hub refused the token (HTTP {status}) -- use a token with write "
                "access to this namespace (`hf auth login`)"
            ) from None
        raise UserError(f"cannot push to {repo_id}: {first_line(e)} -- nothing was committed; retry") from None
    except (OSError, httpx.HTTPError) as e:  # DNS failure, refused connection, timeouts
        raise UserError(
            f"cannot push to {repo_id}: the Hub is unreachable ({first_line(e)}) -- check your network; "
            "nothing was committed"
        ) from None
    return str(getattr(info, "commit_url", info))
