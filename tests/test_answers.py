"""Table-driven tests for the one answer parser (used by the reward, the eval tasks and the Space)."""

import pytest

from wildsci.answers import extract_answer, extract_letter, is_boxed_answer, letter_for, letter_share

# (text, num_options, expected letter or None, expected status)
CASES = [
    # the requested format
    ("Reasoning...\nSo the answer is \\boxed{C}.", 10, "C", "ok"),
    ("\\boxed{J}", 10, "J", "ok"),
    ("Final: $\\boxed{B}$", 10, "B", "ok"),
    ("\\boxed{\\text{D}}", 10, "D", "ok"),
    ("\\boxed{(E)}", 10, "E", "ok"),
    ("\\boxed{A. Mitochondria}", 10, "A", "ok"),
    ("\\boxed{Option G}", 10, "G", "ok"),
    ("\\boxed { H }", 10, "H", "ok"),
    ("I first thought \\boxed{A} but then \\boxed{B}", 10, None, "ambiguous"),
    ("\\boxed{A, B}", 10, None, "ambiguous"),
    ("\\boxed{A or C}", 10, None, "ambiguous"),
    ("\\boxed{42}", 10, None, "none"),
    ("\\boxed{Cell membrane}", 10, None, "none"),
    ("\\boxed{C} and again \\boxed{C}", 10, "C", "ok"),
    ("The answer is B, as stated. \\boxed{D}", 10, "D", "ok"),  # boxed outranks phrases
    # answer phrases
    ("Answer: C", 10, "C", "ok"),
    ("answer: (F)", 10, "F", "ok"),
    ("The answer is C.", 10, "C", "ok"),
    ("The final answer is **E**.", 10, "E", "ok"),
    ("Therefore, the correct answer is (B) because of entropy.", 10, "B", "ok"),
    ("The correct option is D.", 10, "D", "ok"),
    ("After weighing both, the best choice is (H).", 10, "H", "ok"),
    ("Option B is correct.", 10, "B", "ok"),
    ("(I) is the correct answer", 10, "I", "ok"),
    ("I choose E.", 10, "E", "ok"),
    ("I would go with option J", 10, "J", "ok"),
    ("The answer is A or B.", 10, None, "ambiguous"),
    ("The answer is A. Wait, the answer is B.", 10, None, "ambiguous"),
    ("The answer is Ammonia.", 10, None, "none"),  # a letter inside a word
    ("The answer is I think B", 10, None, "none"),  # pronoun I, not option I
    ("The answer is a gas at room temperature", 10, None, "none"),
    ("The answer is A cell wall", 10, None, "none"),  # article A
    ("Answer: E", 4, None, "out_of_range"),  # beyond the option count
    ("The correct option is J", 10, "J", "ok"),
    ("The answer is: D", 10, "D", "ok"),
    ("answer is option c", 10, None, "none"),  # lower-case letters are words, not options
    # bold and trailing forms
    ("After analysis:\n**C**", 10, "C", "ok"),
    ("**G) Fluorescence**", 10, "G", "ok"),
    ("We compare (A) and (B) above.\nSo it must be (C).", 10, "C", "ok"),
    ("Some reasoning about the cell.\nB", 10, "B", "ok"),
    ("Some reasoning.\nC.", 10, "C", "ok"),
    ("Reasoning mentions (A) and (B).\nConclusion: it is unclear.", 10, None, "none"),
    ("The last line names (A) and (D).", 10, None, "ambiguous"),
    ("A. About 9.8 m/s^2 downward", 10, "A", "ok"),
    ("C) The enzyme is denatured.\nThis happens because heat unfolds it.", 10, "C", "ok"),
    ("A. first option text\nB. second option text\nC. third", 10, None, "none"),  # listing, not choosing
    ("E. a fifth option", 4, None, "out_of_range"),
    # reasoning blocks
    ("<think>maybe \\boxed{A}</think>The answer is B.", 10, "B", "ok"),
    ("<think>I think it is C but I am not done", 10, None, "unfinished_reasoning"),
    ("<think>A? B?</think>\n\\boxed{F}", 10, "F", "ok"),
    ("reasoning in a template that opened the tag</think>Answer: D", 10, "D", "ok"),
    # nothing to find
    ("", 10, None, "none"),
    ("   \n  ", 10, None, "none"),
    ("DNA replication is semi-conservative.", 10, None, "none"),
    ("Cats and Dogs Eat Food.", 10, None, "none"),
    (None, 10, None, "none"),
]


@pytest.mark.parametrize("text,num_options,letter,status", CASES)
def test_extract_answer_table(text, num_options, letter, status):
    got = extract_answer(text, num_options)
    assert (got.letter, got.status) == (letter, status), f"{text!r} -> {got}"


def test_the_table_reaches_every_status_and_every_tier():
    """A table that lost the cases of one tier or outcome would still pass case by case: check what it covers."""
    seen = [extract_answer(text, n) for text, n, _, _ in CASES]
    assert {e.status for e in seen} == {"ok", "none", "ambiguous", "out_of_range", "unfinished_reasoning"}
    assert {e.method for e in seen if e.ok} == {"boxed", "phrase", "bold", "paren", "lone", "leading"}


def test_extract_letter_is_the_letter_or_none():
    assert extract_letter("\\boxed{C}") == "C"
    assert extract_letter("\\boxed{A} \\boxed{B}") is None


def test_boxed_detector_is_strict():
    assert is_boxed_answer("so \\boxed{B}")
    assert not is_boxed_answer("The answer is B.")
    assert not is_boxed_answer("\\boxed{A}\\boxed{B}")


def test_num_options_is_validated():
    with pytest.raises(ValueError):
        extract_answer("A", num_options=11)


def test_letter_for():
    assert letter_for(0) == "A" and letter_for(9) == "J"
    with pytest.raises(ValueError):
        letter_for(10)


def test_letter_share_names_the_top_letter_and_its_excess_over_the_gold():
    assert letter_share({"A": 6, "B": 2}, {"A": 2, "B": 2, "C": 4}) == {
        "top_letter": "A",
        "top_letter_share": 0.75,
        "top_letter_excess": 0.5,
    }
    assert letter_share({"C": 0.5, "B": 0.5}, {})["top_letter"] == "B"  # a tie goes to the earlier letter
    assert letter_share({}, {"A": 1}) == {}
