"""What ``wildsci build`` tells the user on the terminal: progress lines and the per-stage table.

Everything goes to stderr (rich), so stdout stays free for ``--dry-run``'s plan and for scripts.
"""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

_ERR = Console(stderr=True, highlight=False)


def log(msg: str) -> None:
    """One progress line, prefixed so it is told apart from library output."""
    _ERR.print(f"[bold cyan]wildsci build[/]: {msg}")


def summary_table(stages: list[dict], title: str) -> None:
    """The build report's stages as a table: rows in, rows out, and why the rest were dropped."""
    t = Table(title=title, show_lines=False)
    for col in ("stage", "in", "out", "dropped", "drop reasons"):
        t.add_column(col, justify="right" if col in ("in", "out", "dropped") else "left")
    for st in stages:
        drops = st.get("drops", {})
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1])) or "-"
        t.add_row(st["name"], str(st["in"]), str(st["out"]), str(sum(drops.values())), reasons)
    Console(stderr=True).print(t)


#: what to do about a stage's dominant drop reason when it removed every row (one line, read after the table)
HINTS = {
    "not_utf8": "the input is not UTF-8 -- re-encode it (e.g. `iconv -f latin1 -t utf-8 in.jsonl > out.jsonl`)",
    "bad_json": "the input lines are not JSON objects -- convert the file to JSON Lines or parquet",
    "bad_xml": "the XML files do not parse -- check that they are JATS full text",
    "missing_id": "no paper id column was found -- name it with sources[].id_column",
    "missing_text": "no text column was found (abstract, body_sections, text, body, full_text) -- name it with "
    "sources[].text_columns",
    "missing_license": "the rows carry no licence -- add a licence column or set sources[].license",
    "filtered": "sources[].where kept no row -- check its column names and values against the data",
    "garbled_text": "the text is mostly not letters (binary data or mojibake) -- check the input's encoding",
    "too_short": "every paper is shorter than chunking.min_words -- lower it or check the text columns",
    "duplicate_paper": "every paper repeats an earlier id -- check sources[].id_column",
    "too_short_passage": "every passage is shorter than chunking.min_words -- lower it",
    "formula_heavy_passage": "the passages are mostly formulas -- raise chunking.max_formula_ratio",
    "not_json": "the generator's replies are not JSON -- check the model and guided_decoding (docs/build.md)",
    "truncated_json": "the replies were cut at generator.max_new_tokens -- raise it",
    "too_easy": "every question was answered by too many voters -- raise vote.max_correct_votes",
    "too_hard": "no voter found the answer -- lower vote.min_correct_votes",
}
#: the noun for one LLM call of a stage
CALLS = {"generate": "generation", "options": "distractor", "vote": "vote", "label": "labelling"}


def failed_calls(failures: Counter[str]) -> str:
    """``52 x HTTP 500 from http://...; 3 x no connection to http://...`` (most frequent first)."""
    return "; ".join(f"{n} x {cause}" for cause, n in failures.most_common(3))


def failure_reason(stages: list[dict], failures: Counter[str]) -> str:
    """The one line that says why a build kept no question: the first stage that lost every row, and its main cause.

    Why not "see the summary": eleven different failures (a dead server, a Latin-1 file, a ``where`` typo ...) used
    to end in the same sentence; the cause was only in the manifest.
    """
    for st in stages:
        if st["name"] == "ingest" and st["in"] == 0:
            return "the sources held no rows (an empty file?) -- check sources[].path and the files it names"
        if st["in"] == 0 or st["out"] > 0:
            continue
        reason, n = max(st["drops"].items(), key=lambda kv: kv[1]) if st["drops"] else ("unknown", st["in"])
        if reason == "llm_error":
            cause = failures.most_common(1)[0][0] if failures else "the LLM calls failed"
            if "://" not in cause:  # the local backend: its own error says what went wrong
                fix = "see the error above."
            else:
                fix = "check base_url, model and api_key_env." if "HTTP 4" in cause else "is the server up?"
            what = (
                f"{n}/{st['in']} {CALLS['generate']} calls failed"
                if st["name"] == "generate"
                else f"{st['name']}: {n}/{st['in']} questions lost to failed {CALLS.get(st['name'], 'LLM')} calls"
            )
            return f"{what}: {cause} -- {fix} Finished calls are cached: rerun the same command to resume"
        hint = HINTS.get(reason, "see the stage table above")
        remote = [c for c in failures if "://" in c]
        if remote:  # rows lost later because calls failed earlier (a server that died mid-build): name the calls
            k = sum(failures[c] for c in remote)
            cause = max(remote, key=lambda c: failures[c])
            return (
                f"{st['name']}: {n}/{st['in']} dropped as {reason} after {k} LLM calls failed ({cause}) -- is the "
                "server up? Finished calls are cached: rerun the same command to resume"
            )
        return f"{st['name']}: {n}/{st['in']} dropped as {reason}: {hint}"
    return (
        "every question was dropped (see the stage table above) -- loosen the recipe's filters or check the generator"
    )
