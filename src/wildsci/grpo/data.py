"""The training data: a WildSci-format dataset filtered, cleaned (drops counted) and turned into chat prompts.

The prompt is :func:`wildsci.prompts.build_messages` (the one prompt format shared with evaluation and the
Space); only the columns the rewards read are kept, because TRL hands every remaining column to each reward.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from wildsci.answers import LETTERS
from wildsci.dataset_io import load_wildsci
from wildsci.errors import UserError
from wildsci.grpo.config import WildSciGRPOArguments
from wildsci.prompts import SYSTEM_PROMPT, build_messages
from wildsci.schema import options_dict, options_list

log = logging.getLogger("wildsci.grpo")

REQUIRED_COLUMNS = ("question", "options", "answer")
#: columns handed to the rewards (TRL passes every remaining dataset column to each reward function)
KEEP_COLUMNS = ("prompt", "answer", "options", "discipline", "nc_subdomain", "question_id")


def check_columns(columns: list[str], script: WildSciGRPOArguments, where: str) -> None:
    need = list(REQUIRED_COLUMNS)
    if script.voting_types:
        need.append("voting_type")
    if script.disciplines:
        need.append("discipline")
    missing = [c for c in need if c not in columns]
    if missing:
        raise UserError(
            f"dataset {where} lacks column(s) {', '.join(missing)} (has {', '.join(columns)}) -- use a WildSci-format "
            "dataset (wildsci build output or JustinTX/WildSci)"
        )


def prepare_dataset(ds, script: WildSciGRPOArguments, where: str, seed: int = 0):
    """Filter, drop unusable rows (counted, logged) and add the conversational ``prompt`` column."""
    check_columns(list(ds.column_names), script, where)
    n0 = len(ds)
    if script.voting_types:
        keep = set(script.voting_types)
        ds = ds.filter(lambda r: r["voting_type"] in keep)
    if script.disciplines:
        keep_d = set(script.disciplines)
        ds = ds.filter(lambda r: r["discipline"] in keep_d)
    n_filtered = len(ds)

    def usable(r) -> bool:
        opts = options_list(r["options"] or {})
        return (
            2 <= len(opts) <= len(LETTERS)
            and all(str(o).strip() for o in opts)
            and isinstance(r["answer"], str)
            and r["answer"] in LETTERS[: len(opts)]
            and bool(str(r["question"] or "").strip())
        )

    ds = ds.filter(usable)
    dropped = n_filtered - len(ds)
    if dropped:
        log.warning(
            "%s: dropped %d of %d rows (empty question, <2 options, or answer not an option letter)",
            where,
            dropped,
            n_filtered,
        )
    if len(ds) == 0:
        raise UserError(
            f"dataset {where}: no usable rows left ({n0} rows, {n_filtered} after the voting_types/disciplines "
            f"filters, {dropped} unusable) -- loosen the filters or check the dataset"
        )
    if script.max_train_samples is not None and script.max_train_samples < len(ds):
        ds = ds.shuffle(seed=seed).select(range(script.max_train_samples))
    if script.option_rotations > 1:
        # TRL walks the rows in order (shuffle_dataset: false), so the questions are shuffled here, once
        ds = ds.shuffle(seed=seed).map(lambda b: rotations(b, script.option_rotations), batched=True)
    system = SYSTEM_PROMPT if script.system_prompt is None else (script.system_prompt or None)
    ds = ds.map(lambda r: {"prompt": build_messages(r["question"], r["options"], system_prompt=system)})
    ds = ds.remove_columns([c for c in ds.column_names if c not in KEEP_COLUMNS])
    log.info("%s: %d rows (of %d; %d after filters, %d unusable dropped)", where, len(ds), n0, n_filtered, dropped)
    return ds


def rotation_shifts(n_options: int, k: int) -> list[int]:
    """``k`` cyclic shifts spread evenly over ``n_options`` positions (4 of 10 options: 0, 2, 5, 8)."""
    return [round(j * n_options / k) % n_options for j in range(k)]


def rotations(batch: dict[str, list], k: int) -> dict[str, list]:
    """Each row repeated ``k`` times in a row, its options rotated left by :func:`rotation_shifts` (the gold letter
    moves with its option).

    Why: a one-question step pushes the policy towards that question's gold letter, and a small model reads that
    push as "prefer this letter". When the same question is asked with its gold at k different letters in one
    step, the pushes towards letters cancel and only reading the options is rewarded. A question with fewer
    options than ``k`` repeats some orders.
    """
    out: dict[str, list] = {key: [] for key in batch}
    for i in range(len(batch["question"])):
        opts = options_list(batch["options"][i])
        gold = LETTERS.index(batch["answer"][i])
        for shift in rotation_shifts(len(opts), k):
            for key in batch:
                out[key].append(batch[key][i])
            out["options"][-1] = options_dict(opts[shift:] + opts[:shift])
            out["answer"][-1] = LETTERS[(gold - shift) % len(opts)]
    return out


def load_split(script: WildSciGRPOArguments, split: str, seed: int = 0):
    ds = load_wildsci(script.dataset_name, split=split, revision=script.dataset_revision)
    return prepare_dataset(ds, script, f"{script.dataset_name}[{split}]", seed=seed)


def dataset_provenance(ref: str, revision: str | None) -> dict[str, Any]:
    """What exactly was trained on: a folder's build recipe hash, or the Hub commit of the dataset."""
    p = Path(ref).expanduser()
    if p.exists():
        info: dict[str, Any] = {"dataset": str(p.resolve()), "revision": "local folder"}
        report = p / "build_report.json"
        if report.is_file():
            try:
                info["recipe_hash"] = json.loads(report.read_text()).get("recipe_hash")
            except (OSError, ValueError):
                pass
        return info
    info = {"dataset": ref, "revision": revision or "main"}
    try:
        info["commit"] = HfApi().dataset_info(ref, revision=revision).sha
    except Exception:  # offline or private: the requested revision is all we know
        pass
    return info
