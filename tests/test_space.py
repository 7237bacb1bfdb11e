"""The Gradio Space: config and input limits in-process; the verdict through the API of an in-process app whose
models answer known letters; then the real server (``python space/app.py``) driven with ``gradio_client``
against the tiny model and a fixture dataset; then deployment."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from space_harness import FAKE_TOKEN, SPACE, free_port, known_answers, server, space_module
from wildsci_fixtures import FakeHfApi

from wildsci.dataset_io import load_wildsci
from wildsci.errors import UserError

__all__ = ["known_answers", "server"]  # fixtures, imported from the harness


@pytest.fixture(scope="module")
def app():
    """``space/app.py`` imported as a Space imports it (its folder on ``sys.path``)."""
    return space_module("app")


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
    with pytest.raises(UserError, match="temperature must be between 0 and 2.0, got 9.0 -- set WILDSCI_SPACE_TEMP"):
        app.SpaceConfig.from_env({"WILDSCI_SPACE_TEMPERATURE": "9"})
    with pytest.raises(UserError, match="concurrency must be at least 1, got 0 -- set WILDSCI_SPACE_CONCURRENCY"):
        app.SpaceConfig.from_env({"WILDSCI_SPACE_CONCURRENCY": "0"})


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


def test_dataset_without_wildsci_columns_is_one_clear_line(app, tiny_model, tmp_path):
    from datasets import Dataset

    (tmp_path / "other" / "data").mkdir(parents=True)
    Dataset.from_dict({"text": ["a sentence", "another"], "label": [0, 1]}).to_parquet(
        str(tmp_path / "other" / "data" / "test-00000-of-00001.parquet")
    )
    with pytest.raises(UserError) as e:
        app.QuestionBank.load(str(tmp_path / "other"), "")
    msg = str(e.value)
    assert "is not in the WildSci format: no question, options column (has text, label)" in msg
    assert "WILDSCI_SPACE_DATASET" in msg and "\n" not in msg
    st = app.SpaceState(app.SpaceConfig(base_model=tiny_model, dataset=str(tmp_path / "other"), preload=False))
    assert st.bank is None and any("no question, options column" in n for n in st.notices)
    assert app.build_app(st.cfg, st).title.startswith("WildSci")  # the page still comes up


def test_no_dataset_offline_still_answers_own_questions(app, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(app, "LOCAL_DEMO_DATASETS", (tmp_path / "runs/demo/dataset",))  # no demo run here:
    # the Hub id is tried, and fails offline
    st = app.SpaceState(app.SpaceConfig(base_model=tiny_model))
    assert st.bank is None
    assert any("JustinTX/WildSci" in n and "type your own question" in n for n in st.notices)
    q = app.parse_own_question("Which planet is largest?", "Mars\nJupiter\nVenus", "B", st.cfg)
    frames = list(st.answer(q, compare=True, max_new_tokens=6, temperature=0))
    text, res, verdict, base_text, base_res, base_verdict, status = frames[-1]
    assert res["finished"] and res["gold"] == "B" and res["num_options"] == 3 and 1 <= res["new_tokens"] <= 6
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


def _start_error(app, monkeypatch, capsys, **env: str) -> str:
    """``python space/app.py``'s main with ``WILDSCI_SPACE_<KEY>`` variables: its one error line (exit code 2)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key, value in env.items():
        monkeypatch.setenv(f"WILDSCI_SPACE_{key}", value)
    assert app.main() == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("wildsci space: error: "), err
    return err


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.0.2.1", "WILDSCI_SPACE_HOST='192.0.2.1' (192.0.2.1) is not an address of this machine"),
        ("no-such-host.invalid", "WILDSCI_SPACE_HOST='no-such-host.invalid' is not a host name or address"),
        ("not a host", "is not a host name or address this machine resolves"),
        ("300.1.2.3", "is not a host name or address this machine resolves"),
    ],
)
def test_a_bad_host_is_named_as_the_host_not_as_a_busy_port(app, monkeypatch, capsys, tiny_model, host, expected):
    err = _start_error(app, monkeypatch, capsys, HOST=host, BASE_MODEL=tiny_model)
    assert expected in err and "set WILDSCI_SPACE_HOST to 127.0.0.1" in err and "port" not in err, err


def test_a_bad_gradio_server_name_is_named_as_the_variable_it_came_from(app, monkeypatch, capsys, tiny_model):
    monkeypatch.delenv("WILDSCI_SPACE_HOST", raising=False)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "192.0.2.1")
    err = _start_error(app, monkeypatch, capsys, BASE_MODEL=tiny_model)
    assert "GRADIO_SERVER_NAME='192.0.2.1' (192.0.2.1) is not an address of this machine" in err, err


def test_a_busy_port_is_named_as_a_busy_port(app, monkeypatch, capsys, tiny_model):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _start_error(app, monkeypatch, capsys, HOST="127.0.0.1", PORT=str(port), BASE_MODEL=tiny_model)
    assert f"port {port} on 127.0.0.1 is in use (another server?) -- stop it or set WILDSCI_SPACE_PORT" in err


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("nonsense:foo", "unknown model scheme 'nonsense:'"),
        ("no-org/no-such-model", "must be in the local cache"),
        ("{tmp}", "is not a valid JSON file"),
    ],
)
def test_a_model_that_cannot_load_is_one_line_at_start_up(app, monkeypatch, capsys, tmp_path, model, expected):
    (tmp_path / "config.json").write_text("{")
    model = model.format(tmp=tmp_path)
    err = _start_error(app, monkeypatch, capsys, MODEL=model, PRELOAD="0", PORT=str(free_port()))
    assert f"WILDSCI_SPACE_MODEL={model}: " in err and expected in err, err


# ------------------------------------------------------------------------------ verdicts on known answers
@pytest.fixture(scope="module")
def known(known_answers):
    """``(client, test split, row, letter)`` for the in-process app whose models answer known letters."""
    from gradio_client import Client

    k = known_answers
    return Client(k.url, verbose=False), k.test, k.row, k.letter


def test_the_verdict_says_correct_when_the_model_gives_the_gold_letter(known):
    client, test, row, letter = known
    text, res, verdict, base_text, base_res, base_verdict, status = client.predict(row, True, 64, 0, api_name="/ask")
    assert text.endswith(f"Answer: {letter}") and status.startswith("✅ answered")
    assert (res["letter"], res["gold"], res["correct"]) == (letter, letter, True)
    assert f"Model answer: **{letter}** · Gold answer: **{letter}** · ✅ **Correct**" in verdict
    votes = test[row]["voting_answers"]
    assert f"({sum(v == letter for v in votes)}/{len(votes)} voters chose the gold answer)" in verdict
    assert f"Voting class: **{test[row]['voting_type']}**" in verdict
    # the other side gave no letter: no answer scores as wrong, and the page says why
    assert base_text == "I cannot tell which statement is true." and base_res["letter"] is None
    assert base_res["correct"] is False and base_res["extraction"] == "none"
    assert "Model answer: none — no answer letter found" in base_verdict and "❌ **Incorrect**" in base_verdict


def test_the_verdict_says_incorrect_when_the_letter_is_not_the_gold(known):
    client, test, _, letter = known
    row = next(i for i in range(len(test)) if test[i]["answer"] != letter)
    _, res, verdict, *_ = client.predict(row, False, 64, 0, api_name="/ask")
    gold = test[row]["answer"]
    assert (res["letter"], res["gold"], res["correct"]) == (letter, gold, False)
    assert f"Model answer: **{letter}** · Gold answer: **{gold}** · ❌ **Incorrect**" in verdict


def test_own_question_verdicts_with_and_without_a_gold_letter(known):
    client, *_, letter = known
    options = "\n".join(f"choice {k}" for k in range(10))
    _, res, verdict, *_ = client.predict("Which?", options, letter, False, 64, 0, api_name="/ask_own")
    assert res["correct"] is True and "✅ **Correct**" in verdict and res["voting_type"] is None
    _, res, verdict, *_ = client.predict("Which?", options, "(none)", False, 64, 0, api_name="/ask_own")
    assert res["correct"] is None and f"Model answer: **{letter}** · no gold answer given" in verdict
    # the same reply on a question with fewer options than its letter: out of range, not a silent answer
    _, res, verdict, *_ = client.predict("Which?", "x\ny", "A", False, 64, 0, api_name="/ask_own")
    assert res["letter"] is None and res["extraction"] == "out_of_range" and res["correct"] is False
    assert "Model answer: none — a letter beyond the options" in verdict and "❌ **Incorrect**" in verdict


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
    assert res["finished"] is True and res["model"] == server.finetuned
    assert res["gold"] == gold and res["voting_type"] == test_split[row]["voting_type"]
    assert res["voters_correct"] == sum(v == gold for v in test_split[row]["voting_answers"])
    assert res["question_id"] == test_split[row]["question_id"] and 1 <= res["new_tokens"] <= 24
    assert f"Gold answer: **{gold}**" in verdict and f"Voting class: **{res['voting_type']}**" in verdict
    assert status.startswith("✅ answered") and base_text == "" and base_res == {}


def test_side_by_side_runs_base_and_finetuned_on_the_same_question(server, client, test_split):
    _, (text, res, _, base_text, base_res, base_verdict, status) = _final(
        client.submit(5, True, 16, 1.0, api_name="/ask")
    )
    assert text.strip() and base_text.strip()
    assert res["model"] == server.finetuned and base_res["model"] == server.base
    assert res["gold"] == base_res["gold"] == test_split[5]["answer"]
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
    assert "Gold answer: **B**" in verdict and status.startswith("✅")


@pytest.mark.parametrize(
    ("endpoint", "args", "message"),
    [
        ("/ask_own", ("Why?", "only one option", "(none)", False, 8, 0), "give 2 to 10 options"),
        ("/ask_own", ("Why?", "a\nb", "C", False, 8, 0), "the correct answer 'C' is not one of the option"),
        ("/ask_own", (12345, "a\nb", "Z", False, 8, 0), "the correct answer 'Z' is not one of the option letters A-B"),
        ("/ask", (999, False, 8, 0), "question number 999 is outside 0-11"),
        ("/ask", (-5, False, 8, 0), "question number -5 is outside 0-11"),
        ("/ask", ("third", False, 8, 0), "question number 'third' is not a number"),
    ],
)
def test_bad_input_gets_a_clear_status_line(server, client, endpoint, args, message):
    text, res, verdict, base_text, base_res, base_verdict, status = client.predict(*args, api_name=endpoint)
    assert message in res["error"] and status.startswith(f"⚠️ {message}") and text == ""
    assert "Traceback" not in server.log.read_text(errors="replace")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, False, 100000, 0), "max_new_tokens must be between 1 and 1024, got 100000"),
        ((1, False, 0, 0), "max_new_tokens must be between 1 and 1024, got 0"),
        ((1, False, 8, 7), "temperature must be between 0.0 and 2.0, got 7"),
        ((1, False, "many", 0), "max_new_tokens must be a number between 1 and 1024, got 'many'"),
    ],
)
def test_out_of_range_sliders_get_a_clear_status_line(server, client, args, message):
    text, res, *_, status = client.predict(*args, api_name="/ask")
    assert message in res["error"] and status.startswith(f"⚠️ {message}") and text == ""
    assert "Traceback" not in server.log.read_text(errors="replace")


def test_random_question_stays_inside_the_filter(server, client, test_split):
    for _ in range(3):
        _, row, view = client.predict("Biology", "Neuroscience", api_name="/random_question")
        assert test_split[row]["nc_subdomain"] == "Neuroscience"
        assert test_split[row]["question"].split(":")[0] in view
    _, row, view = client.predict("Alchemy", "All", api_name="/random_question")  # not a discipline here
    assert row is None and view == "*No question in this selection.*"
    assert "Traceback" not in server.log.read_text(errors="replace")


def test_the_shared_server_shows_no_token(server, client):
    for path in ("/", "/config", "/gradio_api/info"):
        with urllib.request.urlopen(server.url + path, timeout=30) as r:
            assert FAKE_TOKEN not in r.read().decode("utf-8", "replace")
    assert FAKE_TOKEN not in str(client.predict(0, True, 4, 1.0, api_name="/ask"))
    assert FAKE_TOKEN not in server.log.read_text(errors="replace")


@pytest.mark.slow
def test_embedded_smollm2_answers_a_real_arc_question(app, embedded_model, shared_data):
    """The default local setup (``python space/app.py``: embedded SmolLM2) on a real ARC-Challenge question."""
    import json

    line = (shared_data / "benchmarks" / "arc_challenge_test.jsonl").open(encoding="utf-8").readline()
    arc = json.loads(line)
    cfg = app.SpaceConfig(dataset="/nonexistent/dataset")
    st = app.SpaceState(cfg)
    assert st.finetuned.ref == "embedded:smollm2-135m-instruct"
    q = app.parse_own_question(arc["question"], "\n".join(arc["options"]), arc["answer"], cfg)
    frames = list(st.answer(q, compare=False, max_new_tokens=48, temperature=0))
    text, res, verdict, *_, status = frames[-1]
    assert len(frames) > 3 and len(text.split()) >= 3, f"expected streamed English text, got {text!r}"
    assert res["gold"] == arc["answer"] and res["extraction"] in ("ok", "none", "ambiguous", "out_of_range")
    assert status.startswith("✅") and ("✅ **Correct**" in verdict) == (res["correct"] is True)


# ------------------------------------------------------------------------------------------------ deployment
@pytest.fixture(scope="module")
def deploy_mod():
    return space_module("deploy")


def test_deploy_uploads_a_self_contained_space(deploy_mod, tmp_path):
    import ast

    from huggingface_hub import SpaceCard

    FakeHfApi.reset(commit_dir=tmp_path / "space")
    args = deploy_mod.parse_args(["--space-id", "me/wildsci", "--model", "me/smollm2-grpo", "--hardware", "zero-a10g"])
    assert deploy_mod.deploy(args, api=FakeHfApi()) == "https://huggingface.co/spaces/me/wildsci"
    kinds = [c[0] for c in FakeHfApi.calls]
    assert kinds[:2] == ["create_repo", "create_commit"] and kinds[-1] == "request_space_hardware"
    assert FakeHfApi.calls[0][1] == {
        "repo_id": "me/wildsci", "repo_type": "space", "space_sdk": "gradio", "private": False, "exist_ok": True
    }  # fmt: skip
    assert FakeHfApi.calls[-1][1] == {"repo_id": "me/wildsci", "hardware": "zero-a10g"}
    variables = {c[1]["key"]: c[1]["value"] for c in FakeHfApi.calls if c[0] == "add_space_variable"}
    assert variables == {
        "WILDSCI_SPACE_MODEL": "me/smollm2-grpo",
        "WILDSCI_SPACE_BASE_MODEL": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "WILDSCI_SPACE_DATASET": "JustinTX/WildSci",
    }
    card = SpaceCard.load(tmp_path / "space" / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    assert card.data.sdk_version == __import__("gradio").__version__, "README sdk_version must match gradio"
    assert card.data.models == ["me/smollm2-grpo", "HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert card.data.datasets == ["JustinTX/WildSci"] and len(card.data.short_description) <= 60

    # the Space's own modules (app.py and every sibling it imports) and their wildsci imports are uploaded
    up = tmp_path / "space"
    assert {p.name for p in up.glob("*.py")} == {p.name for p in SPACE.glob("*.py")} - {"deploy.py"}
    uploaded = {p.stem for p in (up / "wildsci").iterdir()}
    for f in [*up.glob("*.py"), *(up / "wildsci").glob("*.py")]:
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wildsci."):
                assert node.module.split(".")[1] in uploaded, f"{f.name} imports {node.module}, not uploaded"
    # the uploaded folder runs on its own: app.py imports its siblings and the uploaded wildsci, not this checkout
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import app, wildsci, questions, models;"
        "from wildsci.taxonomy import load_taxonomy; assert len(load_taxonomy().subdomains) == 26;"
        "print('\\n'.join(m.__file__ for m in (app, wildsci, questions, models)))"
    )
    p = subprocess.run([sys.executable, "-c", probe, str(up)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert all(line.startswith(str(up)) for line in p.stdout.splitlines()), p.stdout


def test_deploy_refuses_local_models_in_one_line(deploy_mod, capsys):
    rc = deploy_mod.main(["--space-id", "me/x", "--model", "embedded:smollm2-135m-instruct", "--dry-run"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wildsci space deploy: error: --model 'embedded:smollm2-135m-instruct' is not a Hub id")
    assert "\n" not in err
