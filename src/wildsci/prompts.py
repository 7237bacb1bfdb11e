"""The one prompt format for multiple-choice questions, shared by GRPO, every eval task and the Space.

A question is shown with exactly as many lettered options as it has (never "A-D" for 10 options), and
the instruction names the last letter, so the model is told the real option range.
"""

from __future__ import annotations

from wildsci.answers import LETTERS
from wildsci.schema import options_list

SYSTEM_PROMPT = (
    "You are a careful scientist. Reason about the question step by step, then give your final answer "
    "as \\boxed{X}, where X is the letter of the correct option."
)


def answer_instruction(num_options: int) -> str:
    last = LETTERS[num_options - 1]
    return f"Answer with the letter of the correct option (A through {last}) in the form \\boxed{{X}}."


def format_question(question: str, options: dict[str, str] | list[str]) -> str:
    """The user turn: question, lettered options, and the answer-format instruction."""
    opts = options_list(options)
    if not 2 <= len(opts) <= len(LETTERS):
        raise ValueError(f"a question needs 2 to {len(LETTERS)} options, got {len(opts)}")
    lines = [question.strip(), "", "Options:"]
    lines += [f"{LETTERS[i]}. {str(o).strip()}" for i, o in enumerate(opts)]
    lines += ["", answer_instruction(len(opts))]
    return "\n".join(lines)


def build_messages(
    question: str, options: dict[str, str] | list[str], system_prompt: str | None = SYSTEM_PROMPT
) -> list[dict[str, str]]:
    """Chat messages for one question (system prompt optional: some chat templates have none)."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    msgs.append({"role": "user", "content": format_question(question, options)})
    return msgs
