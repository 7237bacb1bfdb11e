"""``wildsci papers``: listing and fetching from a loopback Europe PMC that serves real papers as JATS.

One module-scoped crawl meets every failure the issue names (a licence the recipe does not allow, a paper without
full text, a 404, a 429 with Retry-After, a 500 then success, a truncated XML) through the public command; the
tests below each check one promise about its outcome. Papers: real PLOS rows of ../shared/data/papers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from wildsci.testing.europepmc import EuropePMCServer, articles_from_rows, load_rows

ROWS = list(range(19, 28)) + [16, 17, 18, 34]  # 9 CC-BY-4.0 with its URL, 3 CC-BY without a version, 1 CC0


def real_articles(shared_data: Path):
    rows = load_rows(shared_data / "papers" / "plos_articles.jsonl", 40)
    return articles_from_rows([rows[i] for i in ROWS])


def write_recipe(tmp: Path, url: str, **extra) -> Path:
    recipe = {
        "name": "plos-test",
        "output_dir": str(tmp / "papers"),
        "journal": "PLoS ONE",
        "licenses": ["cc by", "cc0"],
        "from_date": "2000-01-01",
        "to_date": "2024-12-31",
        "api": {
            "base_url": url,
            "rate": 200.0,
            "max_rate": 1000.0,  # a loopback server of our own: the Europe PMC limit does not apply
            "page_size": 4,
            "concurrency": 2,
            "backoff_s": 0.05,
            "max_backoff_s": 2.0,
            "timeout_s": 20,
        },
        **extra,
    }
    path = tmp / "recipes" / "papers" / "test.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def wildsci(*args: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "wildsci.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def rows_of(out: Path) -> list[dict]:
    return [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def crawl(shared_data, tmp_path_factory):
    """A crawl through every scripted failure; yields (tmp, articles, server, first run, report)."""
    tmp = tmp_path_factory.mktemp("crawl")
    articles = real_articles(shared_data)
    articles[0].license = "cc by-nc"  # listed (LICENSE:"cc by" matches it), not allowed by the recipe
    articles[1].pmcid = ""  # in Europe PMC without a full text (not in PMC)
    articles[2].behaviour = "missing"  # listed with a full text, but fullTextXML answers 404
    articles[3].behaviour = "429"
    articles[4].behaviour = "500"
    articles[5].behaviour = "truncated"
    with EuropePMCServer(articles, retry_after="1") as srv:
        recipe = write_recipe(tmp, srv.url)
        proc = wildsci("papers", str(recipe))
        report = json.loads((tmp / "papers" / ".crawl" / "report.json").read_text())
        yield tmp, articles, srv, proc, report


def test_listing_follows_cursor_mark_to_the_end(crawl):
    _, articles, srv, _, report = crawl
    cursors = [s["cursorMark"] for s in srv.searches]
    assert cursors[0] == "*" and len(set(cursors)) == len(cursors)  # each page asked once, from the first
    assert len(cursors) == -(-len(articles) // 4) + 1  # 4 full pages, then the last cursor answers nothing new
    assert all(s["resultType"] == "core" and s["format"] == "json" and s["pageSize"] == "4" for s in srv.searches)
    q = srv.searches[0]["query"]
    assert 'JOURNAL:"PLoS ONE"' in q and "OPEN_ACCESS:y" in q and "FIRST_PDATE:[2000-01-01 TO 2024-12-31]" in q
    assert report["listed"] == report["hit_count"] == len(articles)


def test_disallowed_licence_is_counted_dropped_and_not_fetched(crawl):
    tmp, articles, srv, _, report = crawl
    assert report["drops"]["license_not_allowed"] == 1
    assert report["dropped_licenses"] == {"cc by-nc": 1}
    assert articles[0].pmcid not in srv.attempts
    card = (tmp / "papers" / "README.md").read_text()
    assert "| cc by-nc | 1 |" in card


def test_papers_without_full_text_are_counted_and_the_run_goes_on(crawl):
    _, articles, srv, proc, report = crawl
    assert report["drops"]["no_full_text"] == 1  # no PMCID: never requested
    assert report["drops"]["xml_missing"] == 1  # 404 from fullTextXML
    assert srv.attempts[articles[2].pmcid] and articles[2].pmcid not in srv.served
    assert "dropped xml_missing: 1" in proc.stdout


def test_429_waits_for_retry_after_then_succeeds(crawl):
    tmp, articles, srv, proc, _ = crawl
    pmcid = articles[3].pmcid
    first, second = srv.attempts[pmcid]
    assert second - first >= 0.9  # Retry-After: 1 was honoured
    assert f"{pmcid}: HTTP 429, Retry-After 1 -- attempt 1/6" in proc.stderr
    assert pmcid in {r["paper_id"] for r in rows_of(tmp / "papers")}


def test_500_is_retried_then_succeeds(crawl):
    tmp, articles, srv, proc, _ = crawl
    pmcid = articles[4].pmcid
    assert len(srv.attempts[pmcid]) == 2 and srv.served[pmcid] == 1
    assert f"{pmcid}: HTTP 500 -- attempt 1/6, retrying in" in proc.stderr
    assert pmcid in {r["paper_id"] for r in rows_of(tmp / "papers")}


def test_truncated_xml_is_counted_as_bad_xml(crawl):
    tmp, articles, _, _, report = crawl
    assert report["drops"]["bad_xml"] == 1
    assert articles[5].pmcid not in {r["paper_id"] for r in rows_of(tmp / "papers")}


def test_rows_carry_ids_text_subjects_and_licences(crawl):
    tmp, articles, _, _, report = crawl
    rows = rows_of(tmp / "papers")
    assert len(rows) == report["papers"] == len(articles) - 4
    by_id = {a.pmcid: a for a in articles}
    for r in rows:
        a = by_id[r["paper_id"]]
        assert r["doi"] == a.doi and r["title"] == a.title and r["body_sections"] and r["subjects"]
        assert r["license_raw"] == a.license
        assert r["publication_date"] == a.date and r["year"] == int(a.date[:4])
    licences = {r["license"] for r in rows}
    assert licences == {"CC-BY", "CC-BY-4.0", "CC0-1.0"}  # versioned where the JATS names the version
    v4 = next(r for r in rows if r["license"] == "CC-BY-4.0")
    assert v4["license_jats"] == "http://creativecommons.org/licenses/by/4.0/"
    assert report["licenses"] == {k: sum(r["license"] == k for r in rows) for k in licences}


def test_card_states_source_query_date_and_counts(crawl):
    tmp, _, srv, _, report = crawl
    card = (tmp / "papers" / "README.md").read_text()
    assert card.startswith("---\n") and "license: other" not in card
    assert f"`{srv.searches[0]['query']}`" in card and report["crawled_at"] in card
    for year, n in report["years"].items():
        assert f"| {year} | {n} |" in card
    assert "| CC-BY-4.0 |" in card and "| bad_xml | 1 |" in card


def test_rerun_sends_no_request_for_what_is_done(crawl):
    tmp, articles, srv, _, report = crawl
    searches, attempts = len(srv.searches), sum(len(v) for v in srv.attempts.values())
    again = wildsci("papers", str(tmp / "recipes" / "papers" / "test.yaml"))
    assert len(srv.searches) == searches and sum(len(v) for v in srv.attempts.values()) == attempts
    assert json.loads((tmp / "papers" / ".crawl" / "report.json").read_text())["drops"] == report["drops"]
    assert f"{report['papers']} papers" in again.stdout


def test_sigkill_mid_crawl_then_rerun_fetches_no_document_twice(shared_data, tmp_path):
    articles = real_articles(shared_data)
    with EuropePMCServer(articles, hold_after=5) as srv:
        recipe = write_recipe(tmp_path, srv.url)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "wildsci.cli", "papers", str(recipe)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 60
        while srv.held < 2 and time.monotonic() < deadline:  # both connections wait: 5 documents were served
            time.sleep(0.02)
        assert srv.held == 2, "the crawler did not reach the held requests"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert sum(srv.served.values()) == 5
        srv.release()
        wildsci("papers", str(recipe))
    assert all(n == 1 for n in srv.served.values()), srv.served  # counted at the server
    assert set(srv.served) == {a.pmcid for a in articles}
    assert len(rows_of(tmp_path / "papers")) == len(articles)


def test_max_papers_fetches_a_small_first_run(shared_data, tmp_path):
    articles = real_articles(shared_data)
    with EuropePMCServer(articles) as srv:
        recipe = write_recipe(tmp_path, srv.url)
        proc = wildsci("papers", str(recipe), "--max_papers", "3")
        assert len(srv.searches) == 1  # one page of 4 already lists 3 fetchable papers
    assert sum(srv.served.values()) == 3 and len(rows_of(tmp_path / "papers")) == 3
    assert "not fetched (max_papers): 1" in proc.stdout


def test_dry_run_prints_query_hit_count_and_plan_and_fetches_nothing(shared_data, tmp_path):
    articles = real_articles(shared_data)
    with EuropePMCServer(articles) as srv:
        recipe = write_recipe(tmp_path, srv.url)
        proc = wildsci("papers", str(recipe), "--dry-run")
        assert not srv.attempts and len(srv.searches) == 1
    assert 'query:   JOURNAL:"PLoS ONE" AND OPEN_ACCESS:y AND (LICENSE:"cc by" OR LICENSE:"cc0")' in proc.stdout
    assert f"hits:    {len(articles)} (Europe PMC, now)" in proc.stdout
    assert "plan:" in proc.stdout and "time:" in proc.stdout
    assert not (tmp_path / "papers").exists()


def test_shipped_recipe_dry_run_prints_the_query_offline(repo_root):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "wildsci.cli", "papers", "recipes/papers/nature_communications.yaml", "--dry-run",
         "--api.base_url", "http://127.0.0.1:9/rest"],
        capture_output=True, text=True, cwd=repo_root, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        'query:   JOURNAL:"Nat Commun" AND OPEN_ACCESS:y AND LICENSE:"cc by" '
        "AND FIRST_PDATE:[2020-01-01 TO 2024-12-31]" in proc.stdout
    )
    assert "hits:    unknown -- Europe PMC was not reached" in proc.stdout and "plan:" in proc.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--api.rate", "0"], "api.rate must be > 0"),
        (["--api.rate", "50"], "is above api.max_rate 10.0"),
        (["--api.page_size", "5000"], "api.page_size must be 1-1000"),
        (["--from_date", "2025-01-01"], "from_date 2025-01-01 is after to_date 2024-12-31"),
        (["--licenses", "[all rights reserved]"], "is not a Creative Commons licence"),
    ],
)
def test_meaningless_values_are_refused_in_one_line(repo_root, override, message):
    proc = wildsci("papers", str(repo_root / "recipes/papers/nature_communications.yaml"), *override, check=False)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_output_dir_with_a_users_files_is_refused(shared_data, tmp_path):
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "notes.txt").write_text("mine")
    proc = wildsci("papers", str(write_recipe(tmp_path, "http://127.0.0.1:9/rest")), check=False)
    assert proc.returncode == 2 and "already holds files wildsci papers did not write (notes.txt)" in proc.stderr
    assert (tmp_path / "papers" / "notes.txt").read_text() == "mine"


def test_papers_build_into_questions_that_carry_each_papers_licence(crawl, tmp_path):
    from build_fake_llm import FakeLLM
    from datasets import load_dataset

    papers_dir, _, _, _, _ = crawl
    papers = {r["paper_id"]: r for r in rows_of(papers_dir / "papers")}
    with FakeLLM() as llm:
        recipe = {
            "name": "from-papers",
            "output_dir": str(tmp_path / "questions"),
            "sources": [{"path": str(papers_dir / "papers")}],  # the folder itself: its .crawl state is not read
            "chunking": {"max_tokens": 200, "min_words": 20, "max_chunks_per_paper": 1},
            "generator": {"backend": "openai", "model": "fake-llm", "base_url": llm.base_url, "max_retries": 0},
            "generate": {"questions_per_chunk": 1},
            "vote": {"num_votes": 4, "constrained": True, "min_correct_votes": 0, "max_correct_votes": 4},
            "split": {"validation": 0.0, "test": 0.0},
        }
        path = tmp_path / "recipes" / "data" / "from_papers.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        wildsci("build", str(path), timeout=300)
    report = json.loads((tmp_path / "questions" / "build_report.json").read_text())
    assert report["stages"][0]["in"] == len(papers) and not report["stages"][0]["drops"]  # every row ingested
    questions = [q for split in load_dataset(str(tmp_path / "questions")).values() for q in split]
    assert questions
    for q in questions:
        assert q["source_license"] == papers[q["paper_id"]]["license"]
    assert {q["source_license"] for q in questions} >= {"CC-BY-4.0", "CC-BY"}


def test_wildsci_nc_reads_the_papers_recipes_output(repo_root):
    papers = yaml.safe_load((repo_root / "recipes/papers/nature_communications.yaml").read_text())
    data = yaml.safe_load((repo_root / "recipes/data/wildsci_nc.yaml").read_text())
    assert data["sources"][0]["path"] == papers["output_dir"]
    assert (
        "wildsci papers recipes/papers/nature_communications.yaml"
        in (repo_root / "recipes/data/wildsci_nc.yaml").read_text()
    )


def test_build_from_papers_not_fetched_yet_names_the_papers_command(tmp_path):
    recipe = {
        "name": "later",
        "output_dir": str(tmp_path / "q"),
        "sources": [{"path": str(tmp_path / "papers" / "not_yet"), "expected_papers": 10}],
        "generator": {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
    }
    path = tmp_path / "recipes" / "data" / "later.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(recipe))
    proc = wildsci("build", str(path), check=False)
    assert proc.returncode == 2 and "does not exist yet" in proc.stderr and "`wildsci papers" in proc.stderr


def test_fetch_ranks_on_the_local_executor_cover_the_listing_once(shared_data, tmp_path):
    articles = real_articles(shared_data)
    with EuropePMCServer(articles) as srv:
        recipe = write_recipe(tmp_path, srv.url, executor={"kind": "local", "tasks": 3, "workers": 2})
        wildsci("papers", str(recipe))
        assert len(srv.searches) == -(-len(articles) // 4) + 1  # the listing is one task
    assert srv.served == {a.pmcid: 1 for a in articles}
    shards = sorted(p.name for p in (tmp_path / "papers" / "data").glob("*.parquet"))
    assert shards == [f"train-{r:05d}-of-00003.parquet" for r in range(3)]
    assert sorted(r["paper_id"] for r in rows_of(tmp_path / "papers")) == sorted(a.pmcid for a in articles)
    report = json.loads((tmp_path / "papers" / ".crawl" / "report.json").read_text())
    assert report["world_size"] == 3 and report["papers"] == len(articles)


def test_docs_state_the_crawl_time_the_arithmetic_gives(repo_root):
    from wildsci.papers.run import crawl_estimate

    docs = (repo_root / "docs" / "build.md").read_text()
    for rate in (10.0, 5.0):
        assert f"- {crawl_estimate(50_000, 1000, rate)}\n" in docs


def test_fetch_ranks_as_a_slurm_array_then_a_rerun_writes_the_card(shared_data, slurm_cluster, tmp_path):
    articles = real_articles(shared_data)
    with EuropePMCServer(articles) as srv:
        recipe = write_recipe(tmp_path, srv.url, executor={"kind": "slurm", "tasks": 2, "mem_per_cpu_gb": 1})
        first = wildsci("papers", str(recipe))
        assert "submitted 2 fetch ranks as Slurm array job" in first.stdout
        job = first.stdout.split("Slurm array job ")[1].split()[0]
        env = {**os.environ, **slurm_cluster.env}
        deadline = time.monotonic() + 180
        while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env).stdout.strip():
            assert time.monotonic() < deadline, "the fetch job did not finish in 180 s"
            time.sleep(0.5)
        again = wildsci("papers", str(recipe))
    ranks = [j for j in slurm_cluster.jobcomp() if j.get("ArrayJobId") == job]
    assert len(ranks) == 2 and all(j["JobState"] == "COMPLETED" for j in ranks)
    assert srv.served == {a.pmcid: 1 for a in articles}
    assert f"{len(articles)} papers" in again.stdout and (tmp_path / "papers" / "README.md").is_file()


def test_a_paper_whose_retries_run_out_is_counted_and_fetched_by_the_rerun(shared_data, tmp_path):
    articles = real_articles(shared_data)
    articles[0].behaviour = "down"
    with EuropePMCServer(articles) as srv:
        recipe = write_recipe(tmp_path, srv.url)
        first = wildsci("papers", str(recipe), "--api.max_retries", "1")
        assert "dropped fetch_failed: 1" in first.stdout and "rerun the same command" in first.stdout
        assert f"{articles[0].pmcid}: HTTP 503 (gave up after 2 attempts)" in first.stderr
        assert len(rows_of(tmp_path / "papers")) == len(articles) - 1
        articles[0].behaviour = "ok"
        wildsci("papers", str(recipe))
    assert srv.served == {a.pmcid: 1 for a in articles}
    assert len(rows_of(tmp_path / "papers")) == len(articles)


def test_listing_resumes_from_its_last_cursor(shared_data, tmp_path):
    articles = real_articles(shared_data)
    with EuropePMCServer(articles) as srv:
        recipe = write_recipe(tmp_path, srv.url)
        wildsci("papers", str(recipe), "--max_papers", "2")  # stops after the first page
        first_pages = len(srv.searches)
        wildsci("papers", str(recipe))
    cursors = [s["cursorMark"] for s in srv.searches]
    assert first_pages == 1 and cursors.count("*") == 1 and len(set(cursors)) == len(cursors)
    assert srv.served == {a.pmcid: 1 for a in articles}


def test_ctrl_c_ends_the_crawl_in_seconds_with_exit_130(shared_data, tmp_path):
    with EuropePMCServer(real_articles(shared_data), hold_after=2) as srv:
        recipe = write_recipe(tmp_path, srv.url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "wildsci.cli", "papers", str(recipe)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        deadline = time.monotonic() + 60
        while srv.held < 2 and time.monotonic() < deadline:  # both connections wait on the server
            time.sleep(0.02)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and time.monotonic() - sent < 10
    assert "interrupted -- rerun the same command to resume" in err and "Traceback" not in err


def test_push_sends_the_card_and_parquet_in_one_upload(crawl, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub
    from wildsci_fixtures import FakeHfApi

    from wildsci.cli import main

    tmp, _, srv, _, _ = crawl
    shutil.copytree(tmp / "papers", tmp_path / "papers")
    FakeHfApi.reset()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token_never_printed")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    recipe = tmp / "recipes" / "papers" / "test.yaml"
    args = ["papers", str(recipe), "--output_dir", str(tmp_path / "papers"), "--push", "--hub_repo_id", "me/papers"]
    assert main(args) == 0
    assert [c[0] for c in FakeHfApi.calls] == ["create_repo", "upload_folder"]
    assert FakeHfApi.calls[0][1]["private"] is True
    files = FakeHfApi.calls[1][1]["files"]
    assert "README.md" in files and "data/train-00000-of-00001.parquet" in files
    assert not any(f.startswith(".") for f in files)


def test_a_work_dir_of_another_query_is_refused(crawl):
    tmp, _, _, _, _ = crawl
    proc = wildsci("papers", str(tmp / "recipes" / "papers" / "test.yaml"), "--from_date", "2010-01-01", check=False)
    assert proc.returncode == 2 and "holds the crawl of another query" in proc.stderr
