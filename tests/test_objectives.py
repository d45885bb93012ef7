"""The PAL loss against numbers computed by hand: per-token cross-entropy, per-segment means, the
combined loss and its logged terms, on B=2, T=5, V=3 logits written out in the test."""

from __future__ import annotations

import math

import pytest
import torch

from procsup.data.batch import collate
from procsup.data.tokenize import ANSWER, PROMPT, STEP0, StepFormat, step_boundaries, tokenize
from procsup.data.trajectory import Step, Trajectory
from procsup.objectives.pal import pal_loss, segment_means, token_nll

LN2, LN3 = math.log(2), math.log(3)

# logits[b, j] predicts input_ids[b, j + 1]; the last position predicts nothing.
LOGITS = torch.tensor(
    [
        [[0, 0, 0], [LN2, 0, 0], [0, LN3, 0], [1, 0, -1], [9, 9, 9]],
        [[0, 0, 0], [0, 0, LN2], [LN2, 0, 0], [0, 0, 0], [9, 9, 9]],
    ],
    dtype=torch.float64,
)  # (B=2, T=5, V=3)
INPUT_IDS = torch.tensor([[2, 0, 1, 2, 0], [1, 2, 2, 0, 1]])  # (B, T)

# Cross-entropy by hand: log(sum_v exp z_v) - z_target.
#   row 0: [0,0,0]->1: log 3;  [ln2,0,0]->1: log(2+1+1) - 0 = log 4;  [0,ln3,0]->2: log(1+3+1) = log 5;
#          [1,0,-1]->0: log(e + 1 + 1/e) - 1
#   row 1: [0,0,0]->2: log 3;  [0,0,ln2]->2: log 4 - ln2 = log 2;  [ln2,0,0]->0: log 2;  [0,0,0]->1: log 3
NLL = [
    [LN3, math.log(4), math.log(5), math.log(math.e + 1 + 1 / math.e) - 1],
    [LN3, LN2, LN2, LN3],
]

# Row 0: prompt, step 0 (2 tokens), step 1 (1 token), answer. Row 1: prompt (2), step 0 (2), padding.
SEGMENT_IDS = torch.tensor([[PROMPT, STEP0, STEP0, STEP0 + 1, ANSWER], [PROMPT, PROMPT, STEP0, STEP0, PROMPT]])
SEGS = SEGMENT_IDS[:, 1:]  # the segment of each target token: (B, T-1)

OUT0 = NLL[0][3]  # row 0's answer term; row 1 has no answer
STEPS0 = (NLL[0][0] + NLL[0][1]) / 2 + NLL[0][2]  # row 0: mean of step 0 + mean of step 1
STEPS1 = (NLL[1][1] + NLL[1][2]) / 2  # row 1: step 0 only (its last token is padding, then ignored)


def test_token_nll_by_hand():
    nll = token_nll(LOGITS, INPUT_IDS)
    assert nll.shape == (2, 4)
    torch.testing.assert_close(nll, torch.tensor(NLL, dtype=torch.float32), rtol=0, atol=1e-6)


def test_segment_means_by_hand():
    nll = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]])
    segs = torch.tensor([[PROMPT, ANSWER, STEP0, STEP0, STEP0 + 1], [STEP0 + 1, STEP0 + 1, PROMPT, PROMPT, ANSWER]])
    means, present = segment_means(nll, segs, STEP0 + 2)
    assert means.shape == present.shape == (2, 4)
    assert present.tolist() == [[False, True, True, True], [False, True, False, True]]  # PROMPT is never a target
    torch.testing.assert_close(means[:, 1:], torch.tensor([[2.0, 3.5, 5.0], [10.0, 0.0, 6.5]]))


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0, 3.0])
def test_pal_loss_by_hand(lam):
    terms = pal_loss(token_nll(LOGITS, INPUT_IDS), SEGS, lam)
    expected = {
        # mean over the 2 rows of L_out + lam * sum_t l(step_t); row 1 has no answer so L_out = 0 there
        "loss": ((OUT0 + lam * STEPS0) + (0.0 + lam * STEPS1)) / 2,
        "loss_out": (OUT0 + 0.0) / 2,
        "loss_steps": (STEPS0 + STEPS1) / 2,  # before the lambda weight
        "step_nll": ((NLL[0][0] + NLL[0][1]) / 2 + NLL[0][2] + STEPS1) / 3,  # mean over the 3 supervised steps
    }
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value, abs=1e-6), name


def test_lam_zero_is_outcome_only():
    terms = pal_loss(token_nll(LOGITS, INPUT_IDS), SEGS, 0.0)
    assert terms["loss"].item() == pytest.approx(OUT0 / 2, abs=1e-6)
    assert terms["loss"].item() == pytest.approx(terms["loss_out"].item(), abs=1e-7)


def test_padding_and_prompt_are_ignored():
    """Changing the logits that predict prompt or padding tokens changes neither the loss nor its gradient."""
    logits = LOGITS.clone().requires_grad_(True)
    terms = pal_loss(token_nll(logits, INPUT_IDS), SEGS, 1.0)
    terms["loss"].backward()
    noisy = LOGITS.clone()
    noisy[1, 0] = torch.tensor([50.0, -50.0, 7.0])  # predicts row 1's second prompt token
    noisy[1, 3] = torch.tensor([-30.0, 30.0, 0.0])  # predicts row 1's padding token
    assert pal_loss(token_nll(noisy, INPUT_IDS), SEGS, 1.0)["loss"].item() == pytest.approx(terms["loss"].item(), abs=1e-9)
    assert logits.grad[1, 0].abs().max() == 0 and logits.grad[1, 3].abs().max() == 0
    assert logits.grad[0, 0].abs().max() > 0  # row 0's first prediction is a step token: it does count
    assert logits.grad[:, 4].abs().max() == 0  # the last position predicts nothing


def test_each_step_counts_once_whatever_its_length():
    """l(step_t) is a mean: a 1-token step and a 4-token step with the same per-token loss weigh the same."""
    nll = torch.full((1, 5), 2.0)
    segs = torch.tensor([[STEP0, STEP0 + 1, STEP0 + 1, STEP0 + 1, STEP0 + 1]])
    assert pal_loss(nll, segs, 1.0)["loss_steps"].item() == pytest.approx(4.0)  # 2 + 2, not 2 * 5 / 5 nor 10


def test_boundary_token_loss_lands_in_its_own_step(char_tok):
    """Alignment through the real pipeline (tokenize -> collate -> token_nll -> segments[:, 1:]): a model
    perfect everywhere except on step 1's boundary token has loss only in step 1, log(V) / len(step 1)."""
    traj = Trajectory("1+2", "3", (Step("3"), Step("ok")))
    (row,) = tokenize(traj, char_tok, StepFormat(), "history")
    batch = collate([row], char_tok.pad_token_id)
    ids = batch["input_ids"]  # (1, T)
    V = len(char_tok)
    logits = 50.0 * torch.nn.functional.one_hot(ids.roll(-1, dims=1), V).double()  # predicts token j+1 at j
    b = step_boundaries(row)[1]
    logits[0, b - 1] = 0.0  # uniform where step 1's boundary token is predicted
    nll = token_nll(logits, ids)
    means, present = segment_means(nll, batch["segment_ids"][:, 1:], STEP0 + 2)
    assert present[0].tolist() == [False, True, True, True]
    step1_len = row.segment_ids.count(STEP0 + 1)
    assert means[0, STEP0 + 1].item() == pytest.approx(math.log(V) / step1_len, rel=1e-6)
    assert means[0, STEP0].item() == pytest.approx(0.0, abs=1e-12)
    assert means[0, ANSWER].item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_is_finite():
    """Random logits, a row with steps only, one with the answer only and one of pure padding (no term)."""
    torch.manual_seed(0)
    logits = (5 * torch.randn(3, 6, 11)).requires_grad_(True)
    ids = torch.randint(0, 11, (3, 6))
    segs = torch.tensor(
        [[STEP0, STEP0, STEP0 + 1, STEP0 + 2, STEP0 + 2], [PROMPT, ANSWER, ANSWER, ANSWER, ANSWER], [PROMPT] * 5]
    )
    terms = pal_loss(token_nll(logits, ids), segs, 0.7)
    terms["loss"].backward()
    assert all(torch.isfinite(v).all() for v in terms.values())
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert logits.grad[2].abs().max() == 0
