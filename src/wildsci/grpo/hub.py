"""The trained policy's model card and its push to the Hub (final folder only, private unless asked).

The card holds what a reader needs to reproduce the run: dataset and its revision, the recipe, the
command-line overrides (by name, with the parsed value), final metrics, the guards' warnings, the kit's git
SHA and package versions (:mod:`wildsci.provenance`). Everything written passes :func:`~wildsci.redact.scrub`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData

from wildsci.errors import UserError, first_line
from wildsci.provenance import git_sha, package_versions
from wildsci.redact import REDACTED, is_secret_name, scrub

#: never pushed: intermediate checkpoints, TRL's completion logs, the pickled TrainingArguments (a pickle is no
#: format to share, and the card already states every argument), temporary files
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", "completions/**", "training_args.bin", "*.tmp"]


def redact_recipe(text: str, secrets: Iterable[str]) -> str:
    """The recipe as written (comments are the why) with secret-named keys' values and secret values blanked."""
    lines = []
    for line in text.splitlines():
        key, sep, _ = line.partition(":")
        lines.append(f"{key}: {REDACTED}" if sep and is_secret_name(key.strip()) else line)
    return scrub("\n".join(lines), secrets)


def write_model_card(
    output_dir: Path,
    model_ref: str,
    recipe_text: str,
    overrides: Sequence[tuple[str, Any]],
    provenance: dict[str, Any],
    final: dict[str, Any],
    warnings: Sequence[str],
    secrets: Iterable[str] = (),
) -> Path:
    """README.md of the final folder; ``overrides`` are (name, parsed value) pairs, secrets already blanked."""
    hub_dataset = not Path(provenance["dataset"]).exists()
    data = ModelCardData(
        base_model=model_ref if "/" in model_ref and not Path(model_ref).exists() else None,
        datasets=[provenance["dataset"]] if hub_dataset else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["wildsci", "grpo", "trl", "science-qa"],
    )
    over = " ".join(f"--{k} {REDACTED if is_secret_name(k) else v}" for k, v in overrides) or "none"
    warn = "\n".join(f"- {w}" for w in warnings[:10]) or "none"
    if len(warnings) > 10:
        warn += f"\n- ... and {len(warnings) - 10} more (see wildsci_metrics.jsonl)"
    body = f"""---
{data.to_yaml()}
---

# GRPO policy trained with wildsci-kit

Base model `{model_ref}`, trained with TRL's `GRPOTrainer` on WildSci-format multiple-choice science questions
(`accelerate launch -m wildsci.grpo`). Prompts ask for the answer as `\\boxed{{X}}`; rewards use
`wildsci.answers.extract_answer`.

## Dataset
```json
{json.dumps(provenance, indent=2)}
```

## Recipe
```yaml
{redact_recipe(recipe_text, secrets).strip()}
```
Command-line overrides: `{over}`

## Final metrics
Mean over the last 10% of logged steps (`steps` gives the range), plus the trainer's run summary; every step is in
`wildsci_metrics.jsonl`.
```json
{json.dumps(final, indent=2, default=str)}
```

## Warnings raised during training
{warn}

## Versions
git SHA of wildsci-kit: `{git_sha()}`
```json
{json.dumps(package_versions(), indent=2)}
```
"""
    path = output_dir / "README.md"
    ModelCard(scrub(body, secrets)).save(path)
    return path


def push_model(output_dir: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload the final model folder (not the checkpoints) to ``repo_id``; private unless asked otherwise."""
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(output_dir),
            repo_type="model",
            commit_message="wildsci-kit GRPO policy",
            ignore_patterns=PUSH_IGNORE,
        )
    except Exception as e:
        msg = scrub(first_line(e), [token] if token else [])
        raise UserError(
            f"push to {repo_id} failed: {msg} -- check `hf auth login` and that you may write there"
        ) from None
    return str(getattr(info, "commit_url", repo_id))
