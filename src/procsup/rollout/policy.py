"""Policies: what proposes the next step. A causal LM writing text (any mode), or an action head.

A policy is a small dataclass holding a model, the task whose executor and checkers it runs in, and how
it samples. :func:`procsup.rollout.complete` drives either kind; in state mode (PAL's ``M(s_t) -> a_t``)
all it needs is :meth:`propose`: ``n`` actions for each rendered state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from procsup.data.positions import PositionRule
from procsup.data.tokenize import StepFormat, prompt_ids
from procsup.rollout.generate import generate

PolicyMode = Literal["history", "state", "outcome"]


@dataclass
class LMPolicy:
    """A Hugging Face causal LM that writes steps as it was trained to (:mod:`procsup.data.tokenize`)."""

    model: Any
    tokenizer: Any
    task: Any
    """The task whose problems it solves: its checkers judge answers, its executor runs state mode."""
    fmt: StepFormat = StepFormat()
    """The separators the model was trained with (a saved model carries them: :mod:`procsup.models.saved`)."""
    mode: PolicyMode = "history"
    """history: the model writes every step and the answer; state: it sees one rendered state and writes
    one action, the task's executor applies it; outcome: it writes the answer line alone."""
    temperature: float | None = None
    """None: greedy; else sampling from the full distribution at this temperature."""
    batch_size: int | None = None
    """Rows per ``generate`` call. Default: 512 greedy, 256 sampled state actions, 64 sampled traces (what
    the recorded benchmarks used; samples depend on it)."""
    max_new_tokens: int | None = None
    """Token budget of one generation: per action in state mode (default 16); per trace (default 1.2x the
    longest expert output, :func:`~procsup.rollout.complete.history_budget`) or per step otherwise."""
    max_steps: int | None = None
    """State mode: actions per episode at most (default 4x the longest expert trace of the call)."""
    kv_reuse: bool = True
    """Encode a prompt once for its n samples (:func:`~procsup.rollout.generate.generate`)."""
    positions: PositionRule | None = None
    """Task-given position ids (:mod:`procsup.data.positions`; e.g. the task's coupled rule, as the model
    was trained with); None: the model's default positions."""
    stop_strings: tuple[str, ...] = ()
    """Text that ends a generation besides EOS and the budget, cut off with everything after it before the
    text is parsed: e.g. ``("Question:",)`` for a few-shot-prompted model that goes on to write the next
    example after its answer (without it such a model runs every sample to ``max_new_tokens``)."""

    def __post_init__(self) -> None:
        if self.mode not in ("history", "state", "outcome"):
            raise ValueError(f"mode must be history, state or outcome, got {self.mode!r}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 or None (greedy), got {self.temperature}")
        if isinstance(self.stop_strings, str) or not all(isinstance(x, str) and x for x in self.stop_strings):
            raise ValueError(f"stop_strings must be a tuple of non-empty strings, got {self.stop_strings!r}")
        self.stop_strings = tuple(self.stop_strings)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def rows_per_call(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 512 if self.temperature is None else 256 if self.mode == "state" else 64

    def generate(self, prompts, n: int, max_new_tokens: int, stop_strings=None) -> list[list[list[int]]]:
        """``n`` continuations (new token ids) of each token-id prompt, as this policy samples."""
        return generate(self.model, self.tokenizer, prompts, n=n, max_new_tokens=max_new_tokens,
                        temperature=self.temperature, stop_strings=stop_strings, batch_size=self.rows_per_call(),
                        kv_reuse=self.kv_reuse, positions=self.positions)

    def propose(self, states: list[str], n: int = 1) -> list[list[str]]:
        """State mode: ``n`` actions for each rendered state (the prompt ``s_t · input_sep``)."""
        prompts = [prompt_ids(self.tokenizer, s, self.fmt) for s in states]
        return [[self.tokenizer.decode(t) for t in row] for row in self.generate(prompts, n, self.max_new_tokens or 16)]


def load_policy(path, task, *, mode: PolicyMode | None = None, **sampling) -> LMPolicy:
    """The causal LM saved in ``path`` (:func:`procsup.models.factory.load_model`) as a policy of ``task``,
    with the step format and mode it was trained with (``procsup.json``; a given ``mode`` must agree);
    ``sampling``: the other :class:`LMPolicy` fields (temperature, batch_size, ...)."""
    from procsup.models.factory import load_model
    from procsup.models.saved import check_positions, resolve_format, resolve_mode

    model, tokenizer, saved = load_model(path)
    fmt = resolve_format(saved, path)
    check_positions(saved, path, sampling.get("positions"))
    return LMPolicy(model, tokenizer, task, fmt, mode=resolve_mode(saved, path, mode, "history"), **sampling)


@dataclass
class ActionHeadPolicy:
    """An :class:`~procsup.models.action_head.ActionHeadModel`: a classification head over a fixed action
    vocabulary, read at the end of the state prompt. Always state mode."""

    model: Any
    task: Any
    generator: torch.Generator | None = None
    """None: greedy (argmax); else actions are sampled from ``softmax(logits)`` with this generator."""
    max_steps: int | None = None
    """Actions per episode at most (default 4x the longest expert trace of the call)."""
    mode: PolicyMode = "state"

    def __post_init__(self) -> None:
        if self.mode != "state":
            raise ValueError("an action head acts in state mode only")

    @property
    def device(self) -> torch.device:
        return self.model.device

    def propose(self, states: list[str], n: int = 1) -> list[list[str]]:
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            logits = self.model.state_logits(states)  # (L, A)
        self.model.train(was_training)
        if self.generator is None:
            if n != 1:
                raise ValueError("a greedy action head proposes one action per state")
            choice = logits.argmax(-1)[:, None]  # (L, 1)
        else:
            probs = torch.softmax(logits.float(), -1).cpu()
            # one draw without replacement: the call REINFORCE's recorded runs made
            choice = torch.multinomial(probs, n, replacement=n > 1, generator=self.generator)  # (L, n)
        return [[self.model.actions[a] for a in row] for row in choice.tolist()]
