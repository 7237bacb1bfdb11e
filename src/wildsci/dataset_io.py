"""Reading and writing WildSci-format datasets (a Hub id or a local folder in the Hub layout).

Layout written by ``wildsci build`` and read by GRPO, eval and the Space::

    <dir>/README.md                      dataset card (YAML metadata + statistics)
    <dir>/data/<split>-00000-of-00001.parquet
    <dir>/build_report.json              stage counts and drop reasons (written by the builder)

``datasets.load_dataset(<dir>)`` reads this layout directly, as it reads the same files on the Hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wildsci.errors import UserError, first_line

SPLITS = ("train", "validation", "test")


def save_wildsci(splits: dict[str, list[dict[str, Any]]], out_dir: str | Path) -> dict[str, int]:
    """Write each split as ``data/<split>-00000-of-00001.parquet`` with the WildSci features. Returns row counts.

    Files are written to a temporary name and renamed, so readers never see a half-written split.
    """
    from datasets import Dataset

    from wildsci.schema import COLUMNS, features

    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    feats = features()
    counts = {}
    for split, rows in splits.items():
        table = {c: [r.get(c, "" if c != "voting_answers" else []) for r in rows] for c in COLUMNS}
        ds = Dataset.from_dict(table, features=feats)
        final = out / "data" / f"{split}-00000-of-00001.parquet"
        tmp = final.with_suffix(".parquet.tmp")
        ds.to_parquet(str(tmp))
        os.replace(tmp, final)
        counts[split] = len(rows)
    return counts


def load_wildsci(ref: str, split: str | None = None, revision: str | None = None):
    """Load a WildSci-format dataset from a local folder (Hub layout) or a Hub dataset id.

    Returns a ``DatasetDict`` (``split=None``) or a ``Dataset``. Errors are one line (:class:`UserError`).
    """
    from datasets import load_dataset

    path = Path(ref).expanduser()
    try:
        if path.exists():
            files = sorted((path / "data").glob("*.parquet")) if (path / "data").is_dir() else []
            if not files:
                raise UserError(f"{path}: no data/<split>-*.parquet files -- build it with `wildsci build` first")
            data_files: dict[str, list[str]] = {}
            for f in files:
                data_files.setdefault(f.name.split("-")[0], []).append(str(f))
            if split is not None and split not in data_files:
                raise UserError(f"{path}: no split {split!r} (has {', '.join(sorted(data_files))})")
            return load_dataset("parquet", data_files=data_files, split=split)
        return load_dataset(ref, split=split, revision=revision)
    except UserError:
        raise
    except Exception as e:  # datasets raises many types for "not found / offline"
        msg = first_line(e)
        raise UserError(
            f"cannot load dataset {ref!r}{f' split {split!r}' if split else ''}: {msg} -- "
            "check the Hub id / folder, your network, or HF_HUB_OFFLINE"
        ) from None
