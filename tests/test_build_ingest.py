"""Stages 1-2, ingest and chunk: formats, main text, provenance on every chunk, counted drops, real corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wildsci.builder.chunk import ChunkConfig, TokenCounter, chunk_paper, read_and_chunk
from wildsci.builder.ingest import SourceConfig, clean_text
from wildsci.builder.jats import parse_jats
from wildsci.errors import UserError

LONG = " ".join(
    f"Sentence number {i} explains how the measured effect depends on the sample temperature." for i in range(12)
)

JATS = """<?xml version="1.0" encoding="UTF-8"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:mml="http://www.w3.org/1998/Math/MathML">
 <front><article-meta>
  <article-id pub-id-type="pmcid">PMC000001</article-id>
  <article-id pub-id-type="doi">10.1234/jats.0001</article-id>
  <article-categories><subj-group><subject>Neuroscience</subject></subj-group></article-categories>
  <title-group><article-title>Dendritic spikes gate plasticity</article-title></title-group>
  <permissions><license xlink:href="http://creativecommons.org/licenses/by/4.0/"><license-p>CC BY</license-p></license>
  </permissions>
  <abstract><p>Dendritic spikes in pyramidal neurons were recorded in slices <xref ref-type="bibr" rid="b1">[1]</xref>
   and they gated the induction of long-term potentiation at distal synapses.</p></abstract>
 </article-meta></front>
 <body>
  <sec><title>Introduction</title>
   <p>Pyramidal neurons integrate synaptic input along their dendrites <xref ref-type="bibr" rid="b2">2</xref>, and
    local regenerative events called dendritic spikes can boost distal inputs.</p>
   <fig id="f1"><label>Figure 1</label><caption><p>FIGURE CAPTION TEXT must not appear.</p></caption></fig>
  </sec>
  <sec><title>Results</title>
   <p>Blocking sodium channels abolished the spikes <xref ref-type="fig" rid="f1">Fig. 1</xref> and prevented
    potentiation, while somatic action potentials were unaffected.</p>
   <table-wrap><caption><p>TABLE CAPTION TEXT</p></caption><table><tr><td>1</td></tr></table></table-wrap>
   <p>The formula <inline-formula><mml:math><mml:mi>MATHML</mml:mi></mml:math></inline-formula> was fitted.</p>
  </sec>
  <sec><title>Acknowledgments</title><p>ACKNOWLEDGED FUNDERS must not appear.</p></sec>
 </body>
 <back><ack><p>BACK ACK</p></ack>
  <ref-list><ref id="b1"><mixed-citation>REFERENCE ENTRY</mixed-citation></ref></ref-list>
 </back>
</article>
"""


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jats_keeps_main_text_only(tmp_path):
    paper = parse_jats(JATS)
    assert paper["paper_id"] == "10.1234/jats.0001"
    assert paper["title"] == "Dendritic spikes gate plasticity"
    assert paper["license"] == "CC-BY-4.0"
    assert "Neuroscience" in paper["field_labels"]
    (tmp_path / "a.xml").write_text(JATS)
    chunks, stages = read_and_chunk(
        [SourceConfig(path=str(tmp_path / "a.xml"))], ChunkConfig(min_words=10, max_tokens=2000), progress=False
    )
    assert stages[0]["out"] == 1 and len(chunks) == 1
    text = chunks[0]["text"]
    for gone in ("FIGURE CAPTION", "TABLE CAPTION", "ACKNOWLEDGED", "REFERENCE ENTRY", "BACK ACK", "MATHML", "[1]"):
        assert gone not in text, gone
    assert "dendritic spikes can boost distal inputs" in text and "somatic action potentials were unaffected" in text
    assert chunks[0]["license"] == "CC-BY-4.0" and chunks[0]["paper_id"] == "10.1234/jats.0001"


def test_formats_and_provenance_on_every_chunk(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"paper_id": f"pq-{i}", "title": f"T{i}", "text": LONG, "license": "CC0-1.0", "field_labels": ["ecology"]}
        for i in range(3)
    ]
    folder = tmp_path / "corpus"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "part.parquet")
    _write_jsonl(folder / "more.jsonl", [{**rows[0], "paper_id": "js-1"}])
    (folder / "x.xml").write_text(JATS)
    chunks, stages = read_and_chunk(
        [SourceConfig(path=str(folder))], ChunkConfig(max_tokens=60, min_words=10), progress=False
    )
    assert stages[0]["out"] == 5 and stages[0]["drops"] == {}
    assert {c["paper_id"] for c in chunks} == {"pq-0", "pq-1", "pq-2", "js-1", "10.1234/jats.0001"}
    assert len(chunks) > 5  # long texts were cut into several passages
    for c in chunks:
        assert set(c) == {"paper_id", "chunk_id", "title", "text", "license", "field_labels"}
        assert c["license"] and c["title"] and c["chunk_id"].startswith(c["paper_id"] + "#")
        assert int(len(c["text"].split()) * 1.3) + 1 <= 60 + 20  # within the budget (short tails may merge)


def test_token_aware_chunking_uses_the_tokenizer(tiny_model):
    counter = TokenCounter(tiny_model)
    assert counter.exact
    paper = {"paper_id": "p", "title": "t", "license": "CC0-1.0", "field_labels": [], "sections": [("", LONG)]}
    chunks = chunk_paper(paper, ChunkConfig(max_tokens=50, min_words=5), counter)
    assert len(chunks) >= 2
    assert all(counter(c["text"]) <= 50 * 1.2 for c in chunks)


def test_hub_source_goes_through_load_dataset(tmp_path, monkeypatch):
    import datasets

    seen = {}

    def fake_load_dataset(path, name=None, split=None, revision=None, streaming=False):
        seen.update(path=path, name=name, split=split, revision=revision, streaming=streaming)
        return [{"id": "hub-1", "title": "t", "abstract": LONG, "license": "CC-BY-4.0", "categories": ["astro-ph"]}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    src = SourceConfig(path="my-org/nature-communications-papers", hub_split="train", revision="v1")
    chunks, stages = read_and_chunk([src], ChunkConfig(), progress=False)
    assert seen == {
        "path": "my-org/nature-communications-papers",
        "name": None,
        "split": "train",
        "revision": "v1",
        "streaming": True,
    }
    assert chunks[0]["paper_id"] == "hub-1" and "astro-ph" in chunks[0]["field_labels"]


def test_hub_source_offline_is_one_clear_error():
    with pytest.raises(UserError, match="cannot load it as a Hub dataset"):
        read_and_chunk([SourceConfig(path="no-such-org/no-such-dataset-xyz")], ChunkConfig(), progress=False)


def test_local_folder_through_datasets_hub_format(tmp_path):
    """format: hub with a local dataset folder: exactly the code path of a Hub id, offline."""
    folder = tmp_path / "hubish"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", [{"id": "h1", "title": "t", "abstract": LONG, "license": "CC0-1.0"}])
    chunks, _ = read_and_chunk([SourceConfig(path=str(folder), format="hub")], ChunkConfig(), progress=False)
    assert [c["paper_id"] for c in chunks] == ["h1"]


def test_clean_text_removes_non_prose():
    raw = (
        "10.7554/eLife.02833.001The complex {{cite:abc}} binds DNA [3, 4] (Figure 2A) with {{formula:x}} affinity "
        "(REF ). DOI: http://dx.doi.org/10.7554/eLife.02833.001"
    )
    assert clean_text(raw) == "The complex binds DNA with [math] affinity."


@pytest.mark.parametrize(
    "name,where",
    [
        ("abstracts_permissive.jsonl", {"split": "dev"}),
        ("plos_articles.jsonl", {}),
        ("elife_articles.jsonl", {}),
        ("unarxive_fulltext.jsonl", {}),
    ],
)
def test_real_corpora_ingest(shared_data, name, where):
    chunks, stages = read_and_chunk(
        [SourceConfig(path=str(shared_data / "papers" / name), where=where)], ChunkConfig(), progress=False
    )
    ing = stages[0]
    assert ing["out"] >= 0.9 * (ing["in"] - ing["drops"].get("filtered", 0))
    assert ing["in"] == ing["out"] + sum(ing["drops"].values())  # nothing lost silently
    assert chunks and all(c["license"] and c["paper_id"] and c["text"] for c in chunks)
    joined = " ".join(c["text"] for c in chunks[:200])
    assert "{{formula:" not in joined and "{{cite:" not in joined
    if name == "abstracts_permissive.jsonl":
        assert ing["drops"]["filtered"] == 78  # the heldout split is never read
