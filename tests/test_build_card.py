"""Stage 9: the dataset card. Its YAML must match what ``push_to_hub`` writes and the folder must round-trip."""

from __future__ import annotations

import json

import yaml
from huggingface_hub import DatasetCard
from wildsci_fixtures import make_wildsci_dataset

from wildsci.builder.card import CardConfig, dataset_license, render_card, size_category
from wildsci.schema import features

REPORT = {
    "recipe_hash": "abc123",
    "stages": [
        {"name": "ingest", "in": 10, "out": 8, "drops": {"not_utf8": 1, "missing_license": 1}},
        {"name": "generate", "in": 16, "out": 12, "drops": {"not_json": 3, "too_many_options": 1}},
    ],
    "drops": {"not_utf8": 1, "missing_license": 1, "not_json": 3, "too_many_options": 1},
    "letter_distribution": {"A": 5, "B": 7},
    "voting_types": {"all_aligned": 2, "majority_aligned": 10},
    "per_discipline": {"Physics": 12},
    "per_subdomain": {"Optics and photonics": 12},
    "decontamination": {"mmlu_pro": {"checked": 13, "removed": 1, "benchmark_questions": 12032, "ngrams": 5}},
    "splits": {"train": 32, "validation": 6, "test": 12},
    "llm_calls": {"made": 40, "cached": 2},
    "versions": {"datasets": "5.2.0"},
    "git_sha": "deadbeef",
    "source_licenses": {"CC-BY-4.0": 3, "CC0-1.0": 1},
    "command": "wildsci build recipes/data/x.yaml",
}


def test_card_metadata_matches_the_files_and_push_to_hub(tmp_path):
    from datasets import load_dataset
    from datasets.utils.metadata import MetadataConfigs

    out = make_wildsci_dataset(tmp_path / "ds")
    path = render_card(out, REPORT, "name: x\n", CardConfig(), "wildsci-test", "A test dataset.")
    card = DatasetCard.load(path)
    meta = card.data.to_dict()
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en"]
    assert meta["task_categories"] == ["question-answering", "text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    # configs: exactly what push_to_hub writes (data/<split>-* per split), readable by datasets' own parser
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert configs["default"]["data_files"] == [
        {"split": s, "path": f"data/{s}-*"} for s in ("train", "validation", "test")
    ]
    info = meta["dataset_info"]
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == {"train": 32, "validation": 6, "test": 12}
    assert info["features"] == features()._to_yaml_list()
    assert info["download_size"] == sum(f.stat().st_size for f in (out / "data").glob("*.parquet"))
    # the folder, card included, loads with load_dataset (the Hub layout)
    ds = load_dataset(str(out))
    assert {k: len(v) for k, v in ds.items()} == {"train": 32, "validation": 6, "test": 12}
    body = card.text
    for needle in (
        "not_json",
        "too_many_options",
        "mmlu_pro",
        "CC-BY-4.0",
        "deadbeef",
        "Optics and photonics",
        "majority_aligned",
        "wildsci build recipes/data/x.yaml",
        "name: x",
        "datasets",
    ):
        assert needle in body, needle


def test_card_metadata_is_the_same_as_datasets_writes(tmp_path):
    """Compare with the YAML ``datasets`` itself produces for the same split info (push_to_hub's helpers)."""
    from datasets import DatasetInfo
    from datasets.info import DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from huggingface_hub import DatasetCardData

    out = make_wildsci_dataset(tmp_path / "ds", n_train=8, n_test=4)
    card = DatasetCard.load(render_card(out, REPORT, "", CardConfig(), "n"))
    ref = DatasetCardData()
    info = DatasetInfo(features=features(), splits=SplitDict())
    for s in card.data.to_dict()["dataset_info"]["splits"]:
        info.splits.add(SplitInfo(name=s["name"], num_bytes=s["num_bytes"], num_examples=s["num_examples"]))
    DatasetInfosDict({"default": info}).to_dataset_card_data(ref)
    got = card.data.to_dict()["dataset_info"]
    assert got["features"] == ref.to_dict()["dataset_info"]["features"]
    assert got["splits"] == ref.to_dict()["dataset_info"]["splits"]


def test_license_and_size_helpers():
    assert dataset_license({"CC-BY-4.0": 3, "CC0-1.0": 1}) == "cc-by-4.0"
    assert dataset_license({"CC0-1.0": 1, "unspecified (metadata CC0)": 2}) == "cc0-1.0"
    assert dataset_license({"CC-BY-4.0": 3, "CC-BY-NC-4.0": 1}) == "cc-by-nc-4.0"
    assert dataset_license({"CC-BY-SA-4.0": 1, "CC-BY (version unstated)": 1}) == "cc-by-sa-4.0"
    assert dataset_license({"CC-BY-NC-ND-4.0": 1}) == "other"
    assert dataset_license({"arXiv-nonexclusive-1.0": 1}) == "other"
    assert [size_category(n) for n in (0, 999, 1000, 50_000, 200_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
    ]


def test_card_yaml_is_valid_yaml(tmp_path):
    out = make_wildsci_dataset(tmp_path / "ds", n_train=4, n_test=2)
    text = render_card(out, REPORT, "a: [1, 2]\n", CardConfig(pretty_name="Pretty"), "n").read_text()
    head = text.split("---")[1]
    meta = yaml.safe_load(head)
    assert meta["pretty_name"] == "Pretty"
    assert json.dumps(meta)  # plain data only
