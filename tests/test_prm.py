"""Process reward models: the label-alignment invariant, loss values, and one-pass scoring."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForTokenClassification

from procsup.data.batch import collate
from procsup.data.tokenize import StepFormat, step_boundaries, tokenize
from procsup.data.trajectory import Step, Trajectory
from procsup.models.factory import tiny_hf_config
from procsup.models.prm import build_prm, score, step_probabilities
from procsup.objectives.prm import label_tensors, place_step_labels, prm_loss

from tests.conftest import TINY

SEPARATORS = ["\n", " ки\n", "\n\n", " | "]
text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12)
labels = st.one_of(st.none(), st.booleans(), st.floats(0.0, 1.0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=text, steps=st.lists(st.tuples(text, labels), min_size=1, max_size=5), sep=st.sampled_from(SEPARATORS),
       which=st.sampled_from(["char", "bpe"]))
def test_training_puts_each_label_where_scoring_reads_it(char_tok, bpe_tok, prompt, steps, sep, which):
    tok = char_tok if which == "char" else bpe_tok
    assume(which == "bpe" or sep.isascii())  # the char tokenizer knows printable ASCII only
    fmt = StepFormat(step_sep=sep)
    traj = Trajectory(prompt, "", tuple(Step(a, label=lab) for a, lab in steps))
    (row,) = tokenize(traj, tok, fmt, "steps")
    values, mask = label_tensors([row], [traj.labels], len(row.input_ids))
    bounds = step_boundaries(row)
    # training: exactly the labelled steps' boundaries carry a label, with its value (no bool cast)
    labelled = [(b, lab) for b, lab in zip(bounds, traj.labels) if lab is not None]
    assert mask[0].nonzero().flatten().tolist() == [b for b, _ in labelled]
    assert values[0, mask[0]].tolist() == pytest.approx([float(lab) for _, lab in labelled])
    # the boundary is the last token of "action + sep": decoding up to it ends with that text
    for t, b in enumerate(bounds):
        assert tok.decode(list(row.input_ids[: b + 1])).endswith(steps[t][0] + sep)
    # scoring: read at the same positions
    logits = torch.zeros(1, len(row.input_ids), 2)
    logits[0, mask[0], 1] = 5.0  # a head that says "correct" exactly where labels were placed
    probs = step_probabilities(logits, [row])[0]
    assert [p > 0.9 for p in probs] == [lab is not None for lab in traj.labels]


def test_place_step_labels_rejects_count_mismatch(char_tok):
    (row,) = tokenize(Trajectory("q", "", (Step("a"), Step("b"))), char_tok, StepFormat(), "steps")
    with pytest.raises(ValueError, match="1 labels for a row with 2 steps"):
        place_step_labels(row, [True])


def test_prm_loss_hand_computed():
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])  # (1, 3, 2)
    values = torch.tensor([[0.0, 0.0, 1.0]])
    mask = torch.tensor([[False, True, True]])
    out = prm_loss(logits, values, mask)
    ce_1 = -math.log(math.exp(2) / (math.exp(2) + 1))  # label 0 at pos 1
    ce_2 = -math.log(math.e / (math.e + 1))  # label 1 at pos 2
    assert out["loss"].item() == pytest.approx((ce_1 + ce_2) / 2, rel=1e-6)
    assert out["step_accuracy"].item() == 1.0
    soft = prm_loss(torch.tensor([[[0.0], [1.0]]]), torch.tensor([[0.3, 0.8]]), torch.tensor([[True, True]]))
    sig = 1 / (1 + math.exp(-1))
    bce = (-(0.3 * math.log(0.5) + 0.7 * math.log(0.5)) - (0.8 * math.log(sig) + 0.2 * math.log(1 - sig))) / 2
    assert soft["loss"].item() == pytest.approx(bce, rel=1e-6)
    assert soft["step_accuracy"].item() == 0.5  # 0.5 >= 0.5 vs 0.3 < 0.5 disagree; sigmoid(1) vs 0.8 agree
    with pytest.raises(ValueError, match="hard labels"):
        prm_loss(logits, torch.tensor([[0.0, 0.5, 1.0]]), mask)


@pytest.fixture
def tiny_prm(char_tok):
    torch.manual_seed(0)
    config = tiny_hf_config(TINY, char_tok)
    config.num_labels = 2
    return AutoModelForTokenClassification.from_config(config).eval()


def test_one_pass_scores_equal_per_prefix_scores(tiny_prm, char_tok):
    trajs = [Trajectory("12+39", "", (Step("2+9+0=1,1"), Step("1+3+1=5,0"), Step("done"))),
             Trajectory("7+8", "", (Step("7+8+0=5,1"),))]
    one_pass = score(tiny_prm, char_tok, trajs)
    for traj, scores in zip(trajs, one_pass):
        assert len(scores) == len(traj.steps)
        for t in range(len(traj.steps)):
            prefix = Trajectory(traj.input, "", traj.steps[: t + 1])
            assert score(tiny_prm, char_tok, [prefix])[0][t] == pytest.approx(scores[t], abs=1e-5)


def test_training_step_moves_scores_toward_labels(tiny_prm, char_tok):
    trajs = [Trajectory("1+1", "", (Step("2", label=True), Step("3", label=False)))] * 4
    rows = [tokenize(t, char_tok, StepFormat(), "steps")[0] for t in trajs]
    batch = collate(rows, char_tok.pad_token_id)
    values, mask = label_tensors(rows, [t.labels for t in trajs], batch["input_ids"].size(1))
    opt = torch.optim.AdamW(tiny_prm.parameters(), lr=1e-2)
    tiny_prm.train()
    first = None
    for _ in range(15):
        out = prm_loss(tiny_prm(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits, values, mask)
        first = first if first is not None else out["loss"].item()
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
    assert out["loss"].item() < first
    good, bad = score(tiny_prm, char_tok, trajs[:1])[0]
    assert good > 0.5 > bad


def test_build_prm_loads_a_local_causal_lm(tmp_path, tiny_model):
    model, tok = tiny_model
    model.save_pretrained(tmp_path)
    prm = build_prm(tmp_path)
    assert prm.config.num_labels == 2
    base = {k: v for k, v in model.state_dict().items() if k.startswith("model.")}
    loaded = prm.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in base.items())
    assert build_prm(tmp_path, soft=True).config.num_labels == 1


def test_build_prm_turns_head_dropout_off_so_training_is_reproducible(tmp_path, tiny_model):
    model, _ = tiny_model
    model.save_pretrained(tmp_path)
    prm = build_prm(tmp_path)
    assert prm.dropout.p == 0.0
    prm.train()
    x = torch.randint(0, 10, (2, 7))
    assert torch.equal(prm(input_ids=x).logits, prm(input_ids=x).logits)  # train mode, no randomness left
    assert build_prm(tmp_path, classifier_dropout=0.3).dropout.p == 0.3


def test_build_prm_seeds_the_new_head_without_touching_the_global_generator(tmp_path, tiny_model):
    model, _ = tiny_model
    model.save_pretrained(tmp_path)
    state = torch.random.get_rng_state()
    a, b, c = build_prm(tmp_path, seed=3), build_prm(tmp_path, seed=3), build_prm(tmp_path, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.score.weight, b.score.weight) and not torch.equal(a.score.weight, c.score.weight)
