"""Tokenization: the exact row layout of each mode, and the invariants that training and scoring rely on
(each segment decodes to its own text, a step's boundary is the last token of its separator, the
generation prompt is the row's prefix, ``parse_history`` inverts the history layout)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from procsup.data.tokenize import (
    ANSWER,
    MODES,
    PROMPT,
    STEP0,
    StepFormat,
    parse_history,
    prompt_ids,
    step_boundaries,
    tokenize,
)
from procsup.data.trajectory import Step, Trajectory, TrajectoryError
from procsup.models.factory import DEFAULT_CHARSET

CHARS = sorted(set(DEFAULT_CHARSET))
EOS = 2  # char_tokenizer: <pad>=0, <bos>=1, <eos>=2, <unk>=3, then the sorted characters


def ids(text: str) -> list[int]:
    """Character ids written out independently of the tokenizer."""
    return [4 + CHARS.index(ch) for ch in text]


HAND = Trajectory("1+2", "3", (Step("3", state="1+2"), Step("ok", state="3")))


# --- exact layouts on a hand-made trajectory ------------------------------------------------------


def test_history_layout(char_tok):
    (row,) = tokenize(HAND, char_tok, StepFormat(), "history")
    assert list(row.input_ids) == ids("1+2\n") + ids("3\n") + ids("ok\n") + ids("A:3") + [EOS]
    assert list(row.segment_ids) == [PROMPT] * 4 + [STEP0] * 2 + [STEP0 + 1] * 3 + [ANSWER] * 4
    assert step_boundaries(row) == [5, 8]
    assert row.num_steps == 2


def test_state_layout(char_tok):
    rows = tokenize(HAND, char_tok, StepFormat(), "state")
    assert [list(r.input_ids) for r in rows] == [ids("1+2\n") + ids("3") + [EOS], ids("3\n") + ids("ok") + [EOS]]
    assert [list(r.segment_ids) for r in rows] == [[PROMPT] * 4 + [STEP0] * 2, [PROMPT] * 2 + [STEP0 + 1] * 3]
    assert [step_boundaries(r) for r in rows] == [[5], [4]]  # the EOS closes a state-mode step


def test_outcome_layout(char_tok):
    (row,) = tokenize(HAND, char_tok, StepFormat(), "outcome")
    assert list(row.input_ids) == ids("1+2\nA:3") + [EOS]
    assert list(row.segment_ids) == [PROMPT] * 4 + [ANSWER] * 4
    assert step_boundaries(row) == [] and row.num_steps == 0


def test_multichar_separators_layout(char_tok):
    fmt = StepFormat(input_sep=" =>\n", step_sep=" ;;\n", answer_prefix="Answer: ")
    (row,) = tokenize(HAND, char_tok, fmt, "history")
    assert list(row.input_ids) == ids("1+2 =>\n3 ;;\nok ;;\nAnswer: 3") + [EOS]
    assert list(row.segment_ids) == [PROMPT] * 7 + [STEP0] * 5 + [STEP0 + 1] * 6 + [ANSWER] * 10
    assert step_boundaries(row) == [11, 17]


def test_state_mode_needs_states(char_tok):
    traj = Trajectory("1+2", "3", (Step("3", state="1+2"), Step("ok")))
    with pytest.raises(TrajectoryError, match=r"steps\[1\]\.state") as e:
        tokenize(traj, char_tok, StepFormat(), "state")
    assert e.value.field == "steps[1].state"


def test_bad_mode(char_tok):
    with pytest.raises(ValueError, match="mode"):
        tokenize(HAND, char_tok, StepFormat(), "answers")


def test_empty_step_sep_rejected():
    with pytest.raises(ValueError, match="step_sep"):
        StepFormat(step_sep="")


# --- the invariant, for every mode, on random trajectories, with two kinds of tokenizer ----------

# Printable text with runs of spaces and newlines, where sub-word merges and character splitting differ.
char_text = st.text(alphabet=st.sampled_from(CHARS), max_size=10)


def formats(step_seps):
    return st.builds(
        StepFormat,
        input_sep=st.sampled_from(["\n", " ", ":\n", "\n\n"]),
        step_sep=st.sampled_from(step_seps),
        answer_prefix=st.sampled_from(["A:", "The answer is: ", "####"]),
    )


char_formats = formats(["\n", "\n\n", ";", " ;; ", " >>\n"])  # the char tokenizer knows printable ASCII only
bpe_formats = formats(["\n", " ки\n", "\n\n", ";", " ;; "])


def trajectories(text):
    step = st.builds(Step, action=text, state=text)  # empty actions too: a policy can write nothing
    return st.builds(Trajectory, input=text, target=text, steps=st.lists(step, min_size=1, max_size=4))


def _runs(segs):
    """Segments in order of appearance, each once: (PROMPT, STEP0, STEP0+1, ..., ANSWER)."""
    return [s for s, _ in itertools.groupby(segs)]


def check_invariant(traj: Trajectory, tok, fmt: StepFormat, mode: str) -> None:
    rows = tokenize(traj, tok, fmt, mode)
    eos = tok.eos_token_id

    def text_of(row, seg):
        return tok.decode([i for i, s in zip(row.input_ids, row.segment_ids) if s == seg])

    if mode == "state":
        assert len(rows) == len(traj.steps)
        for t, (row, step) in enumerate(zip(rows, traj.steps)):
            assert _runs(row.segment_ids) == [PROMPT, STEP0 + t]
            assert text_of(row, PROMPT) == step.state + fmt.input_sep
            n_prompt = row.segment_ids.count(PROMPT)
            assert list(row.input_ids[:n_prompt]) == prompt_ids(tok, step.state, fmt)
            assert row.input_ids[-1] == eos and tok.decode(row.input_ids[n_prompt:-1]) == step.action
            assert step_boundaries(row) == [len(row.input_ids) - 1]
        return

    (row,) = rows
    n = len(traj.steps) if mode == "history" else 0
    expected_runs = [PROMPT] if traj.input + fmt.input_sep else []
    assert _runs(row.segment_ids) == expected_runs + [STEP0 + t for t in range(n)] + [ANSWER]
    assert text_of(row, PROMPT) == traj.input + fmt.input_sep
    # the generation prompt is exactly the row's prefix: what the model is trained on is what it is asked
    assert list(row.input_ids[: row.segment_ids.count(PROMPT)]) == prompt_ids(tok, traj.input, fmt)
    for t in range(n):
        assert text_of(row, STEP0 + t) == traj.steps[t].action + fmt.step_sep
    assert row.input_ids[-1] == eos and row.segment_ids[-1] == ANSWER
    answer_ids = [i for i, s in zip(row.input_ids[:-1], row.segment_ids[:-1]) if s == ANSWER]
    assert tok.decode(answer_ids) == fmt.answer_prefix + traj.target

    # boundaries: the last token of each step is the last token of its separator
    bounds = step_boundaries(row)
    assert len(bounds) == n
    sep_last = tok(fmt.step_sep, add_special_tokens=False)["input_ids"][-1]
    starts = [row.segment_ids.index(STEP0 + t) for t in range(n)]
    for t, b in enumerate(bounds):
        assert row.segment_ids[b] == STEP0 + t and row.input_ids[b] == sep_last
        assert b + 1 == len(row.segment_ids) or row.segment_ids[b + 1] != STEP0 + t
        assert tok.decode(row.input_ids[starts[t] : b + 1]) == traj.steps[t].action + fmt.step_sep


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=60, deadline=None)
@given(traj=trajectories(char_text), fmt=char_formats)
def test_segments_decode_to_their_text_char(char_tok, mode, traj, fmt):
    check_invariant(traj, char_tok, fmt, mode)


# For the byte-level BPE any unicode is lossless; draw from a small alphabet so merges actually happen.
bpe_text = st.text(alphabet=st.sampled_from(list("0123456789+=:,>$ abthe\nки.")), max_size=12)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=60, deadline=None)
@given(traj=trajectories(bpe_text), fmt=bpe_formats)
def test_segments_decode_to_their_text_bpe(bpe_tok, mode, traj, fmt):
    check_invariant(traj, bpe_tok, fmt, mode)


def test_bpe_really_merges(bpe_tok):
    """Guard for the test above: the BPE has multi-character tokens, including ones across a newline."""
    toks = bpe_tok.convert_ids_to_tokens(bpe_tok(" ки\nA:46", add_special_tokens=False)["input_ids"])
    assert len(toks) < len(" ки\nA:46")
    pieces = [bpe_tok.decode([i]) for i in bpe_tok.get_vocab().values()]
    assert any(len(p) > 1 and "\n" in p for p in pieces)


# --- parse_history: the scoring side of the history layout ----------------------------------------


@settings(max_examples=200, deadline=None)
@given(actions=st.lists(bpe_text.filter(bool), max_size=5), target=bpe_text, fmt=bpe_formats)
def test_parse_history_inverts_the_layout(actions, target, fmt):
    # Texts that are ambiguous in the layout itself are excluded: an action holding the separator (or one
    # that would run into it) or starting with the answer prefix, and a target with the separator.
    assume(all((a + fmt.step_sep).find(fmt.step_sep) == len(a) and not a.startswith(fmt.answer_prefix) for a in actions))
    assume(fmt.step_sep not in fmt.answer_prefix + target and target == target.strip())
    text = "".join(a + fmt.step_sep for a in actions) + fmt.answer_prefix + target
    assert parse_history(text, fmt) == (actions, target)


@pytest.mark.parametrize("tok_name, step_sep", [("char_tok", " ;;\n"), ("bpe_tok", " ки\n")])
def test_generated_history_round_trip(request, tok_name, step_sep, history_trajs):
    """Training row -> the tokens a perfect model would generate after the prompt (EOS cut, as in
    procsup.rollout.generate) -> decoded text -> parse_history gives back the steps and the answer."""
    tok = request.getfixturevalue(tok_name)
    fmt = StepFormat(step_sep=step_sep)
    for traj in history_trajs:
        (row,) = tokenize(traj, tok, fmt, "history")
        prompt = prompt_ids(tok, traj.input, fmt)
        assert list(row.input_ids[: len(prompt)]) == prompt
        text = tok.decode(row.input_ids[len(prompt) : -1])
        assert parse_history(text, fmt) == ([s.action for s in traj.steps], traj.target)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", ([], None)),
        ("a\nb\n", (["a", "b"], None)),  # cut after a step
        ("a\nb", (["a", "b"], None)),  # cut inside a step
        ("a\nA:", (["a"], "")),  # cut right after the prefix
        ("a\nA: 42 \ntrailing junk", (["a"], "42")),  # the answer ends at the next separator
        ("A:7", ([], "7")),  # no steps at all
    ],
)
def test_parse_history_truncated(text, expected):
    assert parse_history(text, StepFormat()) == expected
