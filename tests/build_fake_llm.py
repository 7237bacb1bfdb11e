"""A deterministic OpenAI-compatible chat server on 127.0.0.1 for the dataset-builder tests.

It stands in for vLLM at the HTTP boundary, so the real ``wildsci build`` (openai backend, cache, every stage)
runs in seconds and is exactly reproducible. Answers depend only on the request body (messages, seed,
schema), like a seeded real server. Markers in a passage steer the generator into each failure the pipeline
must count: ``FAKE:not_json``, ``FAKE:truncated``, ``FAKE:3opts``, ``FAKE:11opts``, ``FAKE:bad_answer``,
``FAKE:dup_options``, ``FAKE:empty_option``, ``FAKE:refers``, ``FAKE:6opts`` (the options stage must add
distractors), ``FAKE:http500`` (the call fails: llm_error), ``FAKE:unlabelable`` in a title (the labeler answers
outside the taxonomy). :func:`write_corpus` writes papers with those markers, :func:`write_recipe` a recipe for them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml

from wildsci.answers import LETTERS
from wildsci.testing.loopback import LoopbackServer, Reply


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:8], "big")


class FakeLLM:
    """``with FakeLLM(delay_s=0.0) as llm: ... llm.base_url, llm.requests``: scripted answers, loopback server."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self._server = LoopbackServer(self._reply, record=False)

    @property
    def base_url(self) -> str:
        return self._server.url

    @property
    def requests(self) -> int:
        """Requests received so far."""
        return self._server.hits

    def __enter__(self) -> FakeLLM:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def _reply(self, body: dict, n: int) -> Reply:
        status, text, finish = self.answer(body)
        return Reply(text if status == 200 else None, status=status, finish_reason=finish, delay_s=self.delay_s)

    # ------------------------------------------------------------------------------------ answers
    def answer(self, body: dict) -> tuple[int, str, str]:
        # the last user turn is the request (earlier turns may be a few-shot example)
        user = next((m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        seed = body.get("seed", 0)
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
        props = schema.get("properties", {})
        if "FAKE:http500" in user:
            return 500, "", "stop"
        if "question" in props:
            return 200, *self.generate(user, seed)
        if "distractors" in props:
            k = props["distractors"].get("minItems", 3)
            base = _h(user, seed) % 10_000
            return 200, json.dumps({"distractors": [f"Unrelated claim number {base + i}" for i in range(k)]}), "stop"
        if "choice" in props:
            choices = props["choice"]["enum"]
            if set(choices) <= set(LETTERS):
                return 200, json.dumps({"choice": self.vote(user, seed, choices)}), "stop"
            if "FAKE:unlabelable" in user:
                return 200, json.dumps({"choice": "Alchemy"}), "stop"
            m = re.search(r"SUBDOMAIN=([A-Za-z -]+?)\.", user)
            pick = m.group(1) if m and m.group(1) in choices else choices[_h(user) % len(choices)]
            return 200, json.dumps({"choice": pick}), "stop"
        return 200, "I cannot help with that.", "stop"

    def generate(self, user: str, seed: int) -> tuple[str, str]:
        excerpt = user.split("Excerpt:", 1)[-1]
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", excerpt) if len(s.split()) >= 6]
        sentence = sentences[_h(excerpt, seed) % len(sentences)] if sentences else excerpt.strip()[:200]
        words = re.findall(r"[A-Za-z]+", sentence)
        topic = " ".join(words[:8])
        q = f"Which conclusion follows from the finding that {topic.lower()} (variant {_h(sentence, seed) % 997})?"
        correct = f"SUPPORTED: {sentence[:120]}"
        wrong = [f"The opposite of {' '.join(words[i : i + 3]).lower()} holds (case {i})" for i in range(9)]
        asked = re.search(r"Give exactly (\d+) options", user)  # the prompt's count (10 unless the recipe says)
        options = [correct, *wrong][: int(asked.group(1)) if asked else 10]
        ans = _h("answer", sentence, seed) % len(options)
        options[0], options[ans] = options[ans], options[0]
        obj = {"question": q, "options": options, "answer": LETTERS[ans], "rationale": f"Stated: {sentence[:80]}"}
        if "FAKE:not_json" in excerpt:
            return "Here is a question about lasers, written as prose rather than JSON.", "stop"
        if "FAKE:truncated" in excerpt:
            return json.dumps(obj)[:60], "length"
        if "FAKE:3opts" in excerpt:
            obj.update(options=options[:3], answer="A")
        elif "FAKE:11opts" in excerpt:
            obj.update(options=[*options, "An eleventh option"])
        elif "FAKE:6opts" in excerpt:
            obj.update(options=[correct, *wrong[:5]], answer="A")
        elif "FAKE:bad_answer" in excerpt:
            obj.update(answer="not one of them")
        elif "FAKE:dup_options" in excerpt:
            obj["options"][1] = obj["options"][2]
        elif "FAKE:empty_option" in excerpt:
            obj["options"][4] = "  "
        elif "FAKE:refers" in excerpt:
            obj["question"] = "According to the authors, " + q
        return json.dumps(obj), "stop"

    def vote(self, user: str, seed: int, letters: list[str]) -> str:
        """Voters find the SUPPORTED option with a question-dependent skill, else pick a hashed wrong letter."""
        gold = next((m.group(1) for m in re.finditer(r"^([A-J])\. SUPPORTED:", user, re.M)), None)
        stem = user.split("Options:")[0]
        skill = 2 if "skilltwo" in stem else _h("skill", stem) % 5  # 0..4 out of 4: some easy, some hard
        if gold and _h("vote", user, seed) % 4 < skill:
            return gold
        return letters[_h("wrong", user, seed) % len(letters)]


# ------------------------------------------------------------------ the corpus and recipe that steer it
BENCH_QUESTION = (
    "A photon travelling through a dispersive glass fibre of refractive index one point five spreads out in time "
    "because different wavelengths travel at different group velocities in the medium"
)


def sentence_text(topic: str, n: int = 4) -> str:
    return " ".join(
        f"Measurements of {topic} in sample {k} showed that the effect grows steadily with temperature and pressure."
        for k in range(n)
    )


def write_corpus(path: Path) -> None:
    """Good papers (each one subdomain), one paper per generator failure, and one row per ingest drop reason."""
    good = [
        ("p-neuro", "Synapses SUBDOMAIN=Neuroscience.", ["q-bio.NC"], "synaptic plasticity"),
        ("p-optics", "Lasers SUBDOMAIN=Optics and photonics.", ["physics.optics"], "laser linewidth"),
        ("p-geo", "Faults SUBDOMAIN=Geoscience.", ["seismology"], "fault slip"),
        ("p-astro", "Halos SUBDOMAIN=Astrophysics and cosmology.", ["astro-ph.GA"], "galaxy rotation"),
        ("p-micro", "Biofilms SUBDOMAIN=Microbiology.", ["microbiology"], "biofilm tolerance"),
        ("p-stat", "Priors SUBDOMAIN=Applied mathematics and statistics.", ["stat.ME"], "posterior shrinkage"),
        ("p-chem", "Catalysts SUBDOMAIN=Chemical synthesis and catalysis.", ["catalysis"], "catalyst turnover"),
        ("p-bat", "Anodes SUBDOMAIN=Energy materials and devices.", ["batteries"], "anode plating"),
        ("p-immu", "Boosters SUBDOMAIN=Immunology.", ["immunology"], "antibody affinity"),
        ("p-eco", "Pollinators SUBDOMAIN=Ecology and biodiversity.", ["ecology"], "pollinator visits"),
        ("p-ml", "Attention SUBDOMAIN=Computer science and artificial intelligence.", ["cs.LG"], "attention cost"),
        (
            "p-ml-copy",
            "Attention again SUBDOMAIN=Computer science and artificial intelligence.",
            ["cs.LG"],
            "attention cost",
        ),  # same text as p-ml: its questions are near duplicates
    ]
    rows = [
        {"id": pid, "title": t, "abstract": sentence_text(topic), "license": "CC-BY-4.0", "subfields": labels}
        for pid, t, labels, topic in good
    ]
    failures = [
        "not_json",
        "truncated",
        "3opts",
        "11opts",
        "bad_answer",
        "dup_options",
        "empty_option",
        "refers",
        "http500",
    ]
    for f in failures:
        rows.append(
            {
                "id": f"p-{f}",
                "title": f"Failure {f} SUBDOMAIN=Neuroscience.",
                "license": "CC0-1.0",
                "subfields": ["q-bio.NC"],
                "abstract": f"FAKE:{f} " + sentence_text("cortical oscillations", 3),
            }
        )
    rows.append(
        {
            "id": "p-6opts",
            "title": "Six SUBDOMAIN=Geoscience.",
            "license": "CC0-1.0",
            "subfields": [],
            "abstract": "FAKE:6opts " + sentence_text("mantle convection", 3),
        }
    )
    rows.append(
        {
            "id": "p-unlabelable",
            "title": "FAKE:unlabelable",
            "license": "CC0-1.0",
            "subfields": [],
            "abstract": sentence_text("skilltwo matter", 3),
        }
    )
    rows.append(
        {
            "id": "p-contaminated",
            "title": "Fibres SUBDOMAIN=Optics and photonics.",
            "license": "CC-BY-4.0",
            "subfields": ["physics.optics"],
            "abstract": BENCH_QUESTION + ".",
        }
    )
    rows.append(
        {
            "id": "p-formula",
            "title": "Maths",
            "license": "CC-BY-4.0",
            "subfields": ["math.PR"],
            "body_sections": [
                {"section": "Proof", "text": " ".join(["{{formula:x}} holds for {{formula:y}}"] * 20)},
                {"section": "Intro", "text": sentence_text("random polynomials", 3)},
            ],
        }
    )
    bad = [
        {"title": "no id", "abstract": sentence_text("x"), "license": "CC0-1.0"},
        {"id": "p-notext", "title": "no text", "abstract": "", "license": "CC0-1.0"},
        {"id": "p-nolicense", "title": "no licence", "abstract": sentence_text("y")},
        {"id": "p-garbled", "title": "garbled", "abstract": "%$#@!&*^ 0101 ¤¤¤ ### " * 30, "license": "CC0-1.0"},
        {"id": "p-short", "title": "short", "abstract": "Too short to ask anything.", "license": "CC0-1.0"},
        {"id": "p-neuro", "title": "duplicate id", "abstract": sentence_text("z"), "license": "CC0-1.0"},
        {
            "id": "p-heldout",
            "title": "held out",
            "abstract": sentence_text("w"),
            "license": "CC0-1.0",
            "split": "test",
        },
        {
            "id": "p-refs",
            "title": "only references",
            "license": "CC0-1.0",
            "body_sections": [{"section": "References", "text": sentence_text("citations", 6)}],
        },
    ]
    with path.open("wb") as fh:
        for r in rows + bad:
            fh.write((json.dumps(r) + "\n").encode())
        fh.write(b'{"id": "p-latin1", "title": "caf\xe9", "abstract": "not utf-8 \xff\xfe"}\n')
        fh.write(b'{"id": "p-broken", "title": \n')


def write_recipe(tmp: Path, base_url: str, data_dir: Path | None = None, **extra) -> Path:
    """A recipe writing to ``tmp/out``; the corpus and benchmark live in ``data_dir`` (shared => same recipe hash)."""
    data_dir = data_dir or tmp
    corpus = data_dir / "papers.jsonl"
    if not corpus.exists():
        write_corpus(corpus)
    bench = data_dir / "bench.jsonl"
    if not bench.exists():
        bench.write_text(json.dumps({"question": BENCH_QUESTION + "?", "options": ["a", "b"]}) + "\n")
    recipe = {
        "name": "fake-build",
        "description": "A test build against a fake OpenAI-compatible server.",
        "output_dir": str(tmp / "out"),
        "sources": [{"path": str(corpus), "where": {"split": [None, "dev"]}}],
        "chunking": {"max_tokens": 120, "min_words": 20},
        "generator": {
            "backend": "openai",
            "model": "fake-llm",
            "base_url": base_url,
            "max_retries": 0,
            "concurrency": 4,
            "temperature": 0.7,
            "timeout_s": 120,  # the fake server answers at once; a loaded machine must not turn slowness into drops
        },
        "generate": {"questions_per_chunk": 2},
        "options": {"max_attempts": 1},
        "vote": {"num_votes": 8, "constrained": True, "min_correct_votes": 1, "max_correct_votes": 7},
        "decontamination": {"benchmarks": [{"name": "tinybench", "path": str(bench)}]},
        "split": {"validation": 0.2, "test": 0.2},
        **extra,
    }
    path = tmp / "recipes" / "data" / "fake.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
