"""The Gradio Space: config and input limits in-process, then the real server (``python space/app.py``) on
loopback driven with ``gradio_client`` against the tiny model and a fixture dataset."""

from __future__ import annotations

import importlib.util
import subprocess
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
    monkeypatch.setattr(app, "LOCAL_DEMO_DATASETS", (tmp_path / "runs/demo/dataset",))  # no demo run here:
    # the Hub id is tried, and fails offline
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
    e = extract_answer(text, len(arc["options"]))
    assert (res["letter"], res["extraction"], res["gold"]) == (e.letter, e.status, arc["answer"])
    assert res["correct"] == (e.letter == arc["answer"]) and status.startswith("✅")


# ------------------------------------------------------------------------------------------------ deployment
class _RecordingHfApi:
    """``HfApi`` at the boundary: records what would be sent to the Hub and writes the commit to a folder."""

    def __init__(self, out):
        self.out, self.calls = out, []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def create_commit(self, repo_id, operations, **kw):
        self.calls.append(("create_commit", repo_id, kw))
        for op in operations:
            dest = self.out / op.path_in_repo
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(op.path_or_fileobj)

    def add_space_variable(self, repo_id, key, value):
        self.calls.append(("variable", key, value))

    def request_space_hardware(self, repo_id, hardware):
        self.calls.append(("hardware", repo_id, hardware))


@pytest.fixture(scope="module")
def deploy_mod():
    spec = importlib.util.spec_from_file_location("wildsci_space_deploy", APP.parent / "deploy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["wildsci_space_deploy"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_deploy_uploads_a_self_contained_space(deploy_mod, tmp_path):
    import ast

    from huggingface_hub import SpaceCard

    api = _RecordingHfApi(tmp_path / "space")
    args = deploy_mod.parse_args(["--space-id", "me/wildsci", "--model", "me/smollm2-grpo", "--hardware", "zero-a10g"])
    assert deploy_mod.deploy(args, api=api) == "https://huggingface.co/spaces/me/wildsci"
    kinds = [c[0] for c in api.calls]
    assert kinds[:2] == ["create_repo", "create_commit"] and kinds[-1] == "hardware"
    assert api.calls[0][2] == {"repo_type": "space", "space_sdk": "gradio", "private": False, "exist_ok": True}
    variables = {c[1]: c[2] for c in api.calls if c[0] == "variable"}
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

    # every wildsci module that app.py (and what it uploads) imports at the top is uploaded
    uploaded = {p.stem for p in (tmp_path / "space" / "wildsci").iterdir()}
    for f in [tmp_path / "space" / "app.py", *(tmp_path / "space" / "wildsci").glob("*.py")]:
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wildsci."):
                assert node.module.split(".")[1] in uploaded, f"{f.name} imports {node.module}, not uploaded"
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import wildsci, wildsci.prompts, wildsci.dataset_io;"
        "from wildsci.taxonomy import load_taxonomy; assert wildsci.__file__.startswith(sys.argv[1]);"
        "assert len(load_taxonomy().subdomains) == 26; print(wildsci.prompts.format_question('Q?', ['a', 'b']))"
    )
    p = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "space")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "A. a\nB. b" in p.stdout


def test_deploy_refuses_local_models_in_one_line(deploy_mod, capsys):
    rc = deploy_mod.main(["--space-id", "me/x", "--model", "embedded:smollm2-135m-instruct", "--dry-run"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wildsci space deploy: error: --model 'embedded:smollm2-135m-instruct' is not a Hub id")
    assert "\n" not in err
