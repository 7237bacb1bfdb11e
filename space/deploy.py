"""Publish ``space/`` as a Hugging Face Space, with the few ``wildsci`` modules it imports next to ``app.py``.

    python space/deploy.py --space-id me/wildsci-demo --model me/SmolLM2-135M-WildSci-GRPO \\
        [--base-model HuggingFaceTB/SmolLM2-135M-Instruct] [--dataset JustinTX/WildSci] [--split test] \\
        [--hardware zero-a10g] [--private] [--dry-run]

Why copy modules instead of ``pip install wildsci`` in ``requirements.txt``: the Space needs only the shared,
light modules (answer parser, prompt format, schema, taxonomy, model references, dataset I/O); uploading
them pins the Space to exactly the parser and prompt of this checkout, with no git URL to keep in sync and
none of the training dependencies. On the Space ``import wildsci`` finds the copy next to ``app.py``.

The models and dataset become Space *variables* (``WILDSCI_SPACE_*``, read by ``app.py``) and the card's
``models:``/``datasets:`` metadata, so the Hub links the Space to them. The token is the one
``huggingface_hub`` finds (``HF_TOKEN`` or ``hf auth login``); it is never printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "src" / "wildsci"
#: app.py, its sibling modules (config, models, questions, verdict) and requirements.txt -- not this script
SPACE_FILES = (*sorted(p.name for p in HERE.glob("*.py") if p.name != "deploy.py"), "requirements.txt")
#: what the Space's modules import from wildsci (and what those import); checked by tests/test_space.py
SPACE_MODULES = (
    "__init__.py",
    "answers.py",
    "prompts.py",
    "schema.py",
    "taxonomy.py",
    "taxonomy.yaml",
    "models.py",
    "dataset_io.py",
    "errors.py",
    "process.py",
    "redact.py",
)
DEFAULT_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


class DeployError(Exception):
    """Shown as one line."""


def _hub_id(ref: str, what: str) -> str:
    if ref.startswith(("embedded:", "tiny:", ".", "/", "~")) or Path(ref).expanduser().exists() or ref.count("/") != 1:
        raise DeployError(
            f"{what} {ref!r} is not a Hub id -- a Space downloads its models from the Hub: upload the checkpoint "
            "first (`hf upload <user>/<name> <folder>`) and pass that id"
        )
    return ref


def space_card(models: list[str], datasets: list[str]) -> str:
    """``space/README.md`` with its front matter's ``models``/``datasets`` set to what this Space serves."""
    from huggingface_hub import SpaceCard

    card = SpaceCard((HERE / "README.md").read_text(encoding="utf-8"))
    card.data.models = list(dict.fromkeys(models))
    card.data.datasets = list(dict.fromkeys(datasets))
    return str(card)


def plan(args: argparse.Namespace) -> tuple[dict[str, bytes], dict[str, str]]:
    """The files to upload (path in the Space -> bytes) and the Space variables."""
    model = _hub_id(args.model, "--model")
    base = _hub_id(args.base_model, "--base-model")
    dataset = args.dataset
    if Path(dataset).expanduser().exists():
        raise DeployError(f"--dataset {dataset!r} is a local folder -- push it first (`wildsci build ... --push`)")
    files = {name: (HERE / name).read_bytes() for name in SPACE_FILES}
    files["README.md"] = space_card([model, base], [dataset]).encode("utf-8")
    for name in SPACE_MODULES:
        files[f"wildsci/{name}"] = (PACKAGE / name).read_bytes()
    variables = {
        "WILDSCI_SPACE_MODEL": model,
        "WILDSCI_SPACE_BASE_MODEL": base,
        "WILDSCI_SPACE_DATASET": dataset,
        "WILDSCI_SPACE_SPLIT": args.split,
    }
    return files, {k: v for k, v in variables.items() if v}


def deploy(args: argparse.Namespace, api=None) -> str:
    """Create (or update) the Space and upload everything in one commit. Returns the Space URL."""
    files, variables = plan(args)
    if args.dry_run:
        for path, data in sorted(files.items()):
            print(f"would upload {path} ({len(data)} bytes)")
        for k, v in variables.items():
            print(f"would set variable {k}={v}")
        return f"https://huggingface.co/spaces/{args.space_id}"
    from huggingface_hub import CommitOperationAdd, HfApi

    api = api or HfApi()
    api.create_repo(args.space_id, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in sorted(files.items())]
    api.create_commit(
        args.space_id, operations=ops, repo_type="space", commit_message=f"Deploy WildSci Space serving {args.model}"
    )
    for key, value in variables.items():
        api.add_space_variable(args.space_id, key, value)
    if args.hardware:
        api.request_space_hardware(args.space_id, args.hardware)
    return f"https://huggingface.co/spaces/{args.space_id}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space-id", required=True, help="<user or org>/<space name>")
    p.add_argument("--model", required=True, help="the finetuned model's Hub id")
    p.add_argument("--base-model", default=DEFAULT_BASE, help="the base model's Hub id (side-by-side)")
    p.add_argument("--dataset", default="JustinTX/WildSci", help="WildSci-format dataset on the Hub")
    p.add_argument("--split", default="", help="split to browse ('' = test, validation, train: first present)")
    p.add_argument("--hardware", default="", help="e.g. zero-a10g (ZeroGPU), t4-small, cpu-basic")
    p.add_argument("--private", action="store_true", help="create the Space private")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded and set; touch nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        url = deploy(parse_args(argv))
    except DeployError as e:
        print(f"wildsci space deploy: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # Hub errors (auth, permissions, network): one line, no traceback, no token
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"wildsci space deploy: error: {type(e).__name__}: {first}", file=sys.stderr)
        return 1
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
