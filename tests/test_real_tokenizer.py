"""The label rule on a real tokenizer: SmolLM2-135M-Instruct's 49,152-token byte-level BPE (the tokenizer files
alone, tests/fixtures/smollm2_tokenizer/, 3.4 MB; no model), with and without its chat template.

The same invariants as tests/test_tokenize.py and tests/test_prm.py: each segment decodes to its own text, a
step's boundary is the last token of its separator, the generation prompt is the row's prefix, training puts
each label where scoring reads it, and generated text parses back into the steps. The separators include ones
this BPE merges with neighbouring text ("\\n\\n" is one token alone and two inside "a.\\n\\nb"; " ки" is two)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from procsup.data.tokenize import MODES, STEP0, StepFormat, parse_history, prompt_ids, step_boundaries, tokenize
from procsup.data.trajectory import Step, Trajectory
from procsup.models.prm import step_probabilities
from procsup.objectives.prm import label_tensors

from tests.test_tokenize import check_invariant

FIXTURE = Path(__file__).parent / "fixtures" / "smollm2_tokenizer"
SEPARATORS = ["\n", "\n\n", " ки", " ки\n", "\n\nStep 1:", " .", " "]
CHAT_MARKERS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]


@pytest.fixture(scope="session")
def smol_tok():
    return AutoTokenizer.from_pretrained(FIXTURE, local_files_only=True)


# Small pieces that merge in this BPE (words with their leading space, digits, newline runs, Cyrillic), and
# the chat template's own markers written as text.
_piece = st.sampled_from(["Step", " 1", ":", " the", " cat", "4", "2", "+", "=", ".", ",", " ", "\n", "\n\n", " ки",
                          "к", "и", "$", "é", *CHAT_MARKERS])
smol_text = st.lists(_piece, max_size=8).map("".join)
smol_formats = st.builds(
    StepFormat,
    input_sep=st.sampled_from(["\n", " ", "\n\n", ":\n"]),
    step_sep=st.sampled_from(SEPARATORS),
    answer_prefix=st.sampled_from(["A:", "The answer is: ", "####"]),
)


def trajectories(text, chat_tok=None):
    """Trajectories whose input is ``text``, or with ``chat_tok``, that text as a user message in the chat
    template with the assistant's turn opened (what an Instruct model is prompted with)."""
    step = st.builds(Step, action=text.filter(bool), state=text)
    inputs = text if chat_tok is None else text.map(lambda x: chat(chat_tok, x))
    return st.builds(Trajectory, input=inputs, target=text, steps=st.lists(step, min_size=1, max_size=4))


def chat(tok, content: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)


def test_the_fixture_is_smollm2s_bpe_and_it_merges(smol_tok):
    """Guard for the tests below: the real vocabulary, and separators that tokenize differently in context."""
    assert len(smol_tok) == 49152 and smol_tok.eos_token == "<|im_end|>" and smol_tok.chat_template
    enc = smol_tok.convert_ids_to_tokens
    assert enc(smol_tok("\n\n", add_special_tokens=False)["input_ids"]) == ["ĊĊ"]
    assert enc(smol_tok("a.\n\nb", add_special_tokens=False)["input_ids"]) == ["a", ".", "Ċ", "Ċ", "b"]
    assert len(smol_tok(" ки", add_special_tokens=False)["input_ids"]) == 2
    assert smol_tok("x")["input_ids"] == smol_tok("x", add_special_tokens=False)["input_ids"]  # no BOS added


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), fmt=smol_formats, chat_template=st.booleans())
def test_segments_decode_to_their_text_smollm2(smol_tok, mode, data, fmt, chat_template):
    traj = data.draw(trajectories(smol_text, smol_tok if chat_template else None))
    check_invariant(traj, smol_tok, fmt, mode)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), sep=st.sampled_from(SEPARATORS), chat_template=st.booleans(),
       labels=st.lists(st.one_of(st.none(), st.booleans(), st.floats(0.0, 1.0)), min_size=1, max_size=4))
def test_training_puts_each_label_where_scoring_reads_it_smollm2(smol_tok, data, sep, chat_template, labels):
    prompt = data.draw(smol_text)
    actions = data.draw(st.lists(smol_text.filter(bool), min_size=len(labels), max_size=len(labels)))
    traj = Trajectory(chat(smol_tok, prompt) if chat_template else prompt, "",
                      tuple(Step(a, label=lab) for a, lab in zip(actions, labels)))
    (row,) = tokenize(traj, smol_tok, StepFormat(step_sep=sep), "steps")
    values, mask = label_tensors([row], [traj.labels], len(row.input_ids))
    bounds = step_boundaries(row)
    labelled = [(b, lab) for b, lab in zip(bounds, traj.labels) if lab is not None]
    assert mask[0].nonzero().flatten().tolist() == [b for b, _ in labelled]
    assert values[0, mask[0]].tolist() == pytest.approx([float(lab) for _, lab in labelled])
    for t, b in enumerate(bounds):  # the boundary closes "action + sep", whatever the merges around it
        assert smol_tok.decode(list(row.input_ids[: b + 1])).endswith(actions[t] + sep)
    logits = torch.zeros(1, len(row.input_ids), 2)
    logits[0, mask[0], 1] = 5.0  # a head that says "correct" exactly where labels were placed
    assert [p > 0.9 for p in step_probabilities(logits, [row])[0]] == [lab is not None for lab in traj.labels]


@pytest.mark.parametrize("chat_template", [False, True])
@pytest.mark.parametrize("step_sep", [" ки\n", "\n\n", "\n"])
def test_generated_history_round_trip_smollm2(smol_tok, history_trajs, step_sep, chat_template):
    """Training row -> the tokens a perfect model would generate after the prompt (EOS cut) -> text ->
    parse_history gives back the steps and the answer."""
    fmt = StepFormat(step_sep=step_sep)
    for traj in history_trajs:
        if chat_template:
            traj = Trajectory(chat(smol_tok, traj.input), traj.target, traj.steps)
        (row,) = tokenize(traj, smol_tok, fmt, "history")
        prompt = prompt_ids(smol_tok, traj.input, fmt)
        assert list(row.input_ids[: len(prompt)]) == prompt
        assert row.input_ids[-1] == smol_tok.eos_token_id
        text = smol_tok.decode(row.input_ids[len(prompt) : -1])
        assert parse_history(text, fmt) == ([s.action for s in traj.steps], traj.target)


def test_chat_markers_in_data_are_text_not_special_tokens(smol_tok):
    """The rule procsup keeps (split_special_tokens=True): text in a trajectory never becomes a special token,
    so data cannot end or pad a row. A chat-templated input is therefore tokenized with its markers spelled
    out (66 tokens here), not as apply_chat_template's ids (37): consistent between training, scoring and
    generation, but not the Instruct model's own chat format (docs/real_model.md)."""
    text = chat(smol_tok, "What is 2+3?")
    ours = prompt_ids(smol_tok, text, StepFormat(input_sep=""))
    template = smol_tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
    specials = set(smol_tok.all_special_ids)
    assert not specials & set(ours) and specials & set(template)
    assert smol_tok.decode(ours) == smol_tok.decode(template) == text
    (row,) = tokenize(Trajectory(text, "5", (Step("2 + 3 = 5"),)), smol_tok, StepFormat(), "history")
    assert [i for i in row.input_ids if i in specials] == [smol_tok.eos_token_id]  # only the closing EOS
    assert row.segment_ids[step_boundaries(row)[0]] == STEP0
