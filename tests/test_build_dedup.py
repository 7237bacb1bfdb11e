"""Stage 7: MinHash LSH near duplicates (datasketch) and n-gram decontamination (real MMLU-Pro when present)."""

from __future__ import annotations

import json

import numpy as np
from datasketch import MinHash

from wildsci.builder.dedup import (
    BenchmarkConfig,
    DecontamConfig,
    Decontaminator,
    DedupConfig,
    NearDupIndex,
    dedup_and_decontaminate,
    ngram_hashes,
)


def _rows(texts):
    return [{"question": t, "question_id": f"q{i}"} for i, t in enumerate(texts)]


def test_signatures_equal_datasketch_minhash():
    idx = NearDupIndex(DedupConfig())
    texts = ["the quick brown fox jumps over the lazy dog today", "a b", "", "one two three four five six seven"]
    sig = idx.signatures(texts)
    hashes, owner = ngram_hashes(texts, 3, idx.hasher)
    for i in range(len(texts)):
        m = MinHash(num_perm=128, hashfunc=lambda x: x)
        m.update_batch(((hashes[owner == i]) >> np.uint64(32)).astype(np.uint32).tolist())
        assert (m.hashvalues == sig[i]).all()


def test_near_duplicates_removed_first_wins():
    base = (
        "Which mechanism explains why heavier isotopes lower the critical temperature of conventional superconductors"
    )
    texts = [
        base + "?",
        base.replace("Which", "What") + "?",  # near duplicate
        "How does chromatic dispersion limit the bandwidth of long single mode optical fibres at 1550 nm?",
        base + "?",  # exact duplicate
        "Why do type II superconductors admit quantized vortices between the lower and upper critical fields?",
    ]
    kept, drops, _ = dedup_and_decontaminate(_rows(texts), DedupConfig(), DecontamConfig(), progress=False)
    assert [r["question_id"] for r in kept] == ["q0", "q2", "q4"]
    assert drops == {"near_duplicate": 2}
    # the same decisions whatever the batch size (streaming in batches of 2)
    kept2, _, _ = dedup_and_decontaminate(_rows(texts), DedupConfig(), DecontamConfig(), batch_size=2, progress=False)
    assert kept2 == kept


def test_decontamination_ignores_boilerplate(tmp_path):
    bench = tmp_path / "b.jsonl"
    boiler = "which of the following statements best describes the"
    qs = [f"{boiler} topic number {i} in a long exam question about item {i}" for i in range(10)]
    qs.append("the isotope effect shows that heavier ions vibrate at lower frequencies in a metal lattice")
    bench.write_text("".join(json.dumps({"question": q}) + "\n" for q in qs))
    cfg = DecontamConfig(benchmarks=[BenchmarkConfig(name="b", path=str(bench))], ngram=8)
    texts = [
        f"{boiler} role of phonons in superconductivity?",  # boilerplate only: kept
        "Why does the isotope effect show that heavier ions vibrate at lower frequencies in a metal lattice?",
        "A question about something else entirely with no shared phrases at all here",
    ]
    kept, drops, report = dedup_and_decontaminate(_rows(texts), DedupConfig(), cfg, progress=False)
    assert [r["question_id"] for r in kept] == ["q0", "q2"]
    assert drops == {"contaminated_b": 1}
    assert report["b"]["checked"] == 3 and report["b"]["removed"] == 1
    assert report["b"]["boilerplate_ngrams_ignored"] > 0


def test_short_benchmark_questions_are_still_checked(tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"question": "What is the charge of an electron?"}) + "\n")
    cfg = DecontamConfig(benchmarks=[BenchmarkConfig(name="b", path=str(bench))], ngram=13)
    deco = Decontaminator(cfg)
    assert deco.check_batch(["What is the charge of an electron?", "What is the mass of a proton?"]) == ["b", None]


def test_real_mmlu_pro_contamination_is_caught(shared_data):
    path = shared_data / "benchmarks" / "mmlu_pro_test.jsonl"
    cfg = DecontamConfig(benchmarks=[BenchmarkConfig(name="mmlu_pro", path=str(path))])
    deco = Decontaminator(cfg)
    assert deco.report["mmlu_pro"]["benchmark_questions"] == 12032
    with path.open() as fh:
        leaked = [json.loads(next(fh))["question"] for _ in range(50)]
    # a generated question that paraphrases the start but copies a long stretch is caught; fresh text is not
    fresh = [
        f"In a study of sample {i}, why does the measured superconducting gap shrink under strain?" for i in range(50)
    ]
    flagged = deco.check_batch(leaked + fresh)
    long_leaks = [q for q in leaked if len(q.split()) >= 8]
    assert sum(f == "mmlu_pro" for f in flagged[:50]) >= 0.9 * len(long_leaks)
    assert all(f is None for f in flagged[50:])
