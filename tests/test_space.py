"""The Gradio Space: config and input limits in-process, then the real server (``python space/app.py``) on
loopback driven with ``gradio_client`` against the tiny model and a fixture dataset."""

from __future__ import annotations

import importlib.util
import sys
import urllib.request

import pytest
from space_harness import APP, FAKE_TOKEN, shared_space

from wildsci.answers import extract_answer
from wildsci.dataset_io import load_wildsci
from wildsci.errors import UserError


@pytest.fixture(scope="module")
def app():
    """``space/app.py`` imported as a module (it is a script, not part of the package)."""
    if "wildsci_space_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("wildsci_space_app", APP)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["wildsci_space_app"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["wildsci_space_app"]


@pytest.fixture(scope="module")
def server():
    return shared_space()  # one server for the Space's API, browser and load tests


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def test_split(server):
    return load_wildsci(str(server.dataset), split="test")


# ------------------------------------------------------------------------------------------------ in-process
def test_config_from_env_defaults_and_one_line_errors(app):
    cfg = app.SpaceConfig.from_env({})
    assert cfg.model == "" and cfg.base_model == "embedded:smollm2-135m-instruct"
    assert (cfg.host, cfg.port, cfg.temperature) == ("127.0.0.1", 7860, 0.0)
    on_space = app.SpaceConfig.from_env({"GRADIO_SERVER_NAME": "0.0.0.0", "WILDSCI_SPACE_MODEL": "me/ft"})
    assert on_space.host == "0.0.0.0" and on_space.model == "me/ft"
    with pytest.raises(UserError, match="WILDSCI_SPACE_PORT='http' is not an integer"):
        app.SpaceConfig.from_env({"WILDSCI_SPACE_PORT": "http"})
    with pytest.raises(UserError, match="above max_new_tokens_limit"):
        app.SpaceConfig.from_env({"WILDSCI_SPACE_MAX_NEW_TOKENS": "5000"})
    with pytest.raises(UserError, match="temperature must be between"):
        app.SpaceConfig.from_env({"WILDSCI_SPACE_TEMPERATURE": "9"})


@pytest.mark.parametrize(
    ("question", "options", "gold", "message"),
    [
        ("", "a\nb", "", "type a question first"),
        ("x" * 2001, "a\nb", "", "the question has 2001 characters; the limit is 2000"),
        ("Which?", "only one", "", "give 2 to 10 options, one per line (got 1)"),
        ("Which?", "\n".join(f"o{i}" for i in range(11)), "", "give 2 to 10 options, one per line (got 11)"),
        ("Which?", "a\n" + "b" * 301, "", "option B has 301 characters; the limit is 300"),
        ("Which?", "Same\nsame ", "", "two options are the same"),
        ("Which?", "a\nb\nc", "D", "the correct answer 'D' is not one of the option letters A-C"),
    ],
)
def test_own_question_limits(app, question, options, gold, message):
    with pytest.raises(UserError) as e:
        app.parse_own_question(question, options, gold, app.SpaceConfig())
    assert message in str(e.value)


def test_own_question_drops_typed_letter_labels(app):
    q = app.parse_own_question(" Which gas? ", "A. Oxygen\n(B) Nitrogen\n\nC) Argon\nhelium", "b", app.SpaceConfig())
    assert (q.text, q.options, q.gold) == ("Which gas?", ["Oxygen", "Nitrogen", "Argon", "helium"], "B")


def test_no_dataset_offline_still_answers_own_questions(app, tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/demo/dataset here: the Hub id is tried, and fails offline
    st = app.SpaceState(app.SpaceConfig(base_model=tiny_model))
    assert st.bank is None
    assert any("JustinTX/WildSci" in n and "type your own question" in n for n in st.notices)
    demo = app.build_app(st.cfg, st)
    assert demo.title.startswith("WildSci")
    q = app.parse_own_question("Which planet is largest?", "Mars\nJupiter\nVenus", "B", st.cfg)
    frames = list(st.answer(q, compare=True, max_new_tokens=6, temperature=0))
    text, res, verdict, base_text, base_res, base_verdict, status = frames[-1]
    assert res["finished"] and res["gold"] == "B" and res["num_options"] == 3 and res["new_tokens"] >= 1
    assert res["letter"] == extract_answer(text, 3).letter
    assert "Gold answer: **B**" in verdict and status.startswith("✅")
    # one model configured: side by side shows it twice but generates once
    assert (base_text, base_verdict) == (text, verdict) and "same model, so it ran once" in status
    with pytest.raises(UserError, match="max_new_tokens must be between 1 and 1024, got 5000"):
        next(st.answer(q, compare=False, max_new_tokens=5000))


def test_bad_env_is_one_line_not_a_traceback(app, monkeypatch, capsys):
    monkeypatch.setenv("WILDSCI_SPACE_MAX_NEW_TOKENS", "lots")
    assert app.main() == 2
    err = capsys.readouterr().err
    assert err == "wildsci space: error: WILDSCI_SPACE_MAX_NEW_TOKENS='lots' is not an integer -- set a number\n"


# ------------------------------------------------------------------------------------------------ real server
def _final(job):
    frames = list(job)  # every streamed update
    return frames, job.result()


def test_ask_streams_a_real_answer_from_the_tiny_model(server, client, test_split):
    row = 3
    frames, (text, res, verdict, base_text, base_res, base_verdict, status) = _final(
        client.submit(row, False, 24, 1.0, api_name="/ask")
    )
    assert len(frames) >= 3, "the reasoning should arrive in several streamed updates"
    assert any(f[0] and not f[1].get("finished") for f in frames[:-1]), "partial text before the verdict"
    assert text.strip(), "the tiny model produced no visible text"
    gold = test_split[row]["answer"]
    e = extract_answer(text, 10)
    assert res["finished"] is True and res["model"] == server.finetuned
    assert (res["letter"], res["extraction"]) == (e.letter, e.status)
    assert res["gold"] == gold and res["correct"] == (e.letter == gold)
    assert res["voting_type"] == test_split[row]["voting_type"]
    assert res["voters_correct"] == sum(v == gold for v in test_split[row]["voting_answers"])
    assert res["question_id"] == test_split[row]["question_id"] and 1 <= res["new_tokens"] <= 24
    assert f"Gold answer: **{gold}**" in verdict
    assert ("✅ **Correct**" in verdict) == res["correct"] and ("❌ **Incorrect**" in verdict) == (not res["correct"])
    assert f"Voting class: **{res['voting_type']}**" in verdict
    assert status.startswith("✅ answered") and base_text == "" and base_res == {}


def test_side_by_side_runs_base_and_finetuned_on_the_same_question(server, client, test_split):
    _, (text, res, _, base_text, base_res, base_verdict, status) = _final(
        client.submit(5, True, 16, 1.0, api_name="/ask")
    )
    assert text.strip() and base_text.strip()
    assert res["model"] == server.finetuned and base_res["model"] == server.base
    assert res["gold"] == base_res["gold"] == test_split[5]["answer"]
    assert base_res["letter"] == extract_answer(base_text, 10).letter
    assert "Gold answer" in base_verdict and status.startswith("✅")


def test_greedy_answers_are_reproducible(client):
    a = client.predict(2, False, 12, 0, api_name="/ask")
    b = client.predict(2, False, 12, 0, api_name="/ask")
    assert a[0] == b[0] and a[1] == b[1]


def test_own_question_through_the_api(client):
    text, res, verdict, *_, status = client.predict(
        "Which particle carries a negative charge?", "A. proton\nB. electron\nC. neutron\nD. photon", "B",
        False, 16, 1.0, api_name="/ask_own",
    )  # fmt: skip
    assert res["num_options"] == 4 and res["gold"] == "B" and res["voting_type"] is None
    assert res["letter"] == extract_answer(text, 4).letter and "Gold answer: **B**" in verdict


@pytest.mark.parametrize(
    ("endpoint", "args", "message"),
    [
        ("/ask_own", ("Why?", "only one option", "(none)", False, 8, 0), "give 2 to 10 options"),
        ("/ask_own", ("Why?", "a\nb", "C", False, 8, 0), "the correct answer 'C' is not one of the option"),
        ("/ask", (999, False, 8, 0), "question number 999 is outside 0-11"),
    ],
)
def test_bad_input_gets_a_clear_status_line(client, endpoint, args, message):
    text, res, verdict, base_text, base_res, base_verdict, status = client.predict(*args, api_name=endpoint)
    assert message in res["error"] and status.startswith("⚠️") and message in status
    assert text == "" and "Traceback" not in status


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, False, 100000, 0), "Value 100000 is greater than maximum value 1024"),
        ((1, False, 8, 7), "Value 7 is greater than maximum value 2.0"),
    ],
)
def test_out_of_range_sliders_are_refused_by_gradio_in_one_line(client, args, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as e:
        client.predict(*args, api_name="/ask")
    assert message in str(e.value) and "Traceback" not in str(e.value)


def test_random_question_stays_inside_the_filter(client, test_split):
    for _ in range(3):
        _, row, view = client.predict("Biology", "Neuroscience", api_name="/random_question")
        assert test_split[row]["nc_subdomain"] == "Neuroscience"
        assert test_split[row]["question"].split(":")[0] in view


def test_no_secret_reaches_the_page_or_the_api(server, client):
    for path in ("/", "/config", "/gradio_api/info"):
        with urllib.request.urlopen(server.url + path, timeout=30) as r:
            assert FAKE_TOKEN not in r.read().decode("utf-8", "replace")
    assert FAKE_TOKEN not in str(client.predict(0, True, 4, 1.0, api_name="/ask"))
    assert FAKE_TOKEN not in server.log.read_text(errors="replace")
