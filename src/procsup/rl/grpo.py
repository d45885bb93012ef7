"""Group-relative policy gradient with outcome and per-step rewards (GRPO, RLOO, PURE's min-form).

A history-mode causal LM policy writes its steps and its answer. Each update:

1. **Sample.** ``batch_size`` problems (the global batch, :func:`procsup.trainers.loop.global_batch`, each
   process taking its slice), ``group_size`` samples each through :func:`procsup.rollout.complete`, seeded
   from ``(seed, update, process)`` so that a resumed run samples what the uninterrupted one sampled.
2. **Rewards.** Each sample gets a list ``[r_1, ..., r_n, o]``: one reward per written step, from a step
   scorer (:data:`procsup.scorers.StepScorer`: the task's exact checker or a PRM), then the answer
   as one more step, ``o = 1`` if the answer is right, else 0 (a sample with no answer line gets
   ``o = 0`` on an answer step with no tokens: it is not trained on an answer it did not write, but its
   steps still see the missing answer through their returns).
3. **Advantages (B, T).** The outcome advantage (``o`` normalized within the group: GRPO, Shao et al.
   2024; or leave-one-out: RLOO, Ahmadian et al. 2024) on every generated token, weighted by
   ``outcome_coef``; plus, weighted by ``step_coef``, the step advantage: per-step returns (``credit``:
   ``sum`` = rewards to go, the usual RL return; ``min`` = the worst reward still to come, PURE's
   min-form, Cheng et al. 2025, arXiv 2504.15275; ``softmin`` = PURE's softmin transform then sum)
   normalized over the group's steps (:func:`procsup.rl.advantages.group_step_advantages`) and put on each
   step's tokens (:func:`procsup.rl.advantages.step_to_token`); the answer's tokens get the answer step's.
4. **Loss.** :func:`procsup.objectives.policy_gradient.policy_gradient_loss`: token-level mean, PPO's
   clipped ratio against the sampling policy's log-probs (``ppo_epochs`` passes over ``minibatches``
   minibatches; with one of each the ratio is 1 and the gradient is REINFORCE's), the k3 KL to a frozen
   copy of the starting policy (``kl_coef``; 0 keeps no reference model).

How a sample becomes tokens: :func:`trace_rows` re-tokenizes the parsed trace with
:func:`procsup.data.tokenize.tokenize_many` (so that ``segment_ids`` say which step each token belongs
to) and checks it against what was generated: an answered sample must give back exactly the
generated token count (its EOS, which ``generate`` cuts, is the answer's last token); an unanswered one
is laid out without an answer (``steps`` layout) and, if its last step had no separator (the budget ran out
in it), that separator's token is left out of the loss. A sample that does not give back its count
(text after the answer line, or a tokenizer that merges across pieces) is not trained on (``dropped``).
With the character tokenizer the re-tokenized ids are exactly the sampled ones (tested); the loss reads
log-probs at ``logits / temperature``, the distribution the tokens were drawn from.

``accelerate launch --num_processes N``: each process samples its slice of the problems and DDP averages
the gradients (each process's loss is its own token mean). The policy stays in eval mode (no dropout), so
that the log-probs trained on are those of the policy that sampled.

Logged per update in ``metrics.jsonl`` (every ``log_steps``): see docs/rl.md. Evaluations of the gaming
monitor (:mod:`procsup.rl.monitor`) go to ``monitor.jsonl``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from procsup.data.batch import collate
from procsup.data.io import read_jsonl
from procsup.data.tokenize import PROMPT, Row, StepFormat, tokenize_many
from procsup.data.trajectory import Trajectory
from procsup.models.factory import load_model
from procsup.models.saved import SavedFormat, resolve_format
from procsup.objectives.pal import token_nll
from procsup.objectives.policy_gradient import policy_gradient_loss
from procsup.rl.advantages import (
    group_normalized_advantages,
    group_step_advantages,
    min_returns,
    pad_steps,
    returns_to_go,
    rloo_advantages,
    softmin_rewards,
    step_to_token,
)
from procsup.rl.monitor import RULES, GamingMonitor, drift, exact_steps, gap
from procsup.rollout import LMPolicy, complete, start
from procsup.trainers.loop import (
    SCHEDULES,
    MetricsLog,
    Run,
    claim_output_dir,
    cut_metrics,
    data_source,
    global_batch,
    make_accelerator,
    prepare_model,
    save_checkpoint,
    start_run,
    start_trackers,
)
from procsup.trainers.options import CheckpointOptions

StepScorer = Callable[[Sequence[Trajectory]], list[list[float]]]  # procsup.scorers.StepScorer (a floor above rl/)
STEP_REWARDS = ("none", "exact", "prm")
CREDITS = ("sum", "min", "softmin")
BASELINES = ("grpo", "rloo")
LOSS_TERMS = ("loss", "pg_loss", "kl", "clip_fraction", "reuse_nll")


@dataclass(kw_only=True)
class RLConfig(CheckpointOptions):
    """A group-relative policy-gradient run (``procsup rl``). Build it in Python, from YAML or from
    ``key=value`` flags. Optimizer, logging and checkpoint fields: :class:`~procsup.trainers.options.CheckpointOptions`
    (the output folder is held as by the PAL and PRM trainers: a non-empty folder needs ``resume`` or
    ``overwrite``); ``max_steps`` counts updates (one sampling round each), ``batch_size`` problems per update
    (all processes), each sampled ``group_size`` times. ``gradient_accumulation_steps`` and ``max_length`` do
    not apply (an update's optimizer steps are ``ppo_epochs x minibatches``; a sample's length is
    ``max_new_tokens``)."""

    output_dir: str
    """Where checkpoints, ``metrics.jsonl``, ``monitor.jsonl`` and the final policy go."""
    model: str | None = None
    """Local directory of the starting policy (a saved history-mode causal LM with its ``procsup.json``).
    Not needed when a model object is passed."""
    task: str | None = None
    """Task name (addition, logic, word_problems, grid), read by the command line to build the task and
    its exact checker; the Python API takes a task object."""
    train_file: str | None = None
    """JSONL of trajectories whose problems are trained on (``task.problem_of`` of each). Not needed when
    problems are passed in Python."""
    eval_file: str | None = None
    """JSONL of held-out trajectories for the gaming monitor (problems only). Optional."""
    step_reward: Literal["none", "exact", "prm"] = "none"
    """Per-step reward: none (outcome alone), exact (the task's step checker), prm (a PRM's step scores)."""
    prm: str | None = None
    """step_reward=prm: local directory of the PRM (its saved step format must be the policy's)."""
    credit: Literal["sum", "min", "softmin"] = "min"
    """How step rewards become a step's return: sum (rewards to go, ``gamma``), min (the worst reward
    still to come: PURE's min-form), softmin (PURE's ``softmax(-r/T)`` transform, then summed)."""
    gamma: float = 1.0
    """credit=sum: discount of rewards to go (0: a step's own reward)."""
    softmin_temperature: float = 0.1
    """credit=softmin: T of ``softmax(-r / T)`` (PURE's default 0.1)."""
    outcome_coef: float = 1.0
    """Weight of the outcome advantage on every generated token (0 with step rewards: the step returns alone,
    whose answer step still carries the outcome)."""
    step_coef: float = 1.0
    """Weight of the per-step advantage (ignored with step_reward=none)."""
    baseline: Literal["grpo", "rloo"] = "grpo"
    """grpo: ``(r - mean) / (std + 1e-4)`` within the group (sample std); rloo: ``r - mean of the others``.
    Used for the outcome and for the pool of step returns."""
    group_size: int = 8
    """G, samples per problem."""
    batch_size: int = 16
    """Problems per update (all processes; divisible by the number of processes)."""
    learning_rate: float = 1e-4
    """Peak AdamW learning rate (warm-up, then ``lr_schedule`` over max_steps updates)."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    """After the warm-up: cosine decay to 0 at max_steps, or constant (the learning rate stays at its peak,
    so that a long run's late updates move the policy as much as its early ones)."""
    warmup_steps: int = 0
    """Updates of linear learning-rate warm-up."""
    max_steps: int = 100
    """Updates (sampling rounds)."""
    log_steps: int = 1
    """Write a metrics line every this many updates."""
    temperature: float = 1.0
    """Sampling temperature; the loss reads log-probs of ``logits / temperature`` (the sampled distribution)."""
    max_new_tokens: int | None = None
    """Token budget of a sample (default: 1.2x the longest expert output of the batch's problems)."""
    clip_eps: float = 0.2
    """PPO's clip range of the ratio to the sampling policy."""
    kl_coef: float = 0.0
    """Weight of the k3 KL to the starting policy (0: no reference model is kept)."""
    ppo_epochs: int = 1
    """Passes over an update's samples."""
    minibatches: int = 1
    """Optimizer steps per pass (the samples split by group; the first one is on-policy, ratio 1)."""
    eval_steps: int = 0
    """Run the gaming monitor on the held-out problems every this many updates, and at the end (0: never)."""
    alert_window: int = 3
    """Monitor: evaluations over which a PRM-score rise with an exact-validity fall is an alert."""
    alert_delta: float = 0.02
    """Monitor: the least rise of the PRM score, and fall of exact step validity, over the window."""
    alert_rule: Literal["divergence", "gap", "drift"] = "divergence"
    """Monitor: ``divergence`` (PRM score up and exact validity down by ``alert_delta`` over ``alert_window``
    evaluations), ``gap`` (PRM score minus exact validity, mean of the last ``alert_window`` evaluations,
    ``alert_delta`` above the first evaluation's: ``monitor.gap``) or ``drift`` (``monitor.drift`` on the
    evaluations: PRM score ``alert_prm_delta`` above and exact validity ``alert_delta`` below the first's)."""
    alert_prm_delta: float | None = None
    """Monitor, ``alert_rule=drift``: the least PRM-score rise (None: ``alert_delta``)."""
    stop_on_alert: bool = False
    """Stop the run (after a final checkpoint) at the first monitor alert."""
    sample_batch_size: int | None = None
    """Rows per generate call (default: the policy's, 64 sampled traces)."""
    sample_alert_window: int = 1
    """On-sample monitor: updates averaged (the last this many) against the first update's samples (0: off)."""
    sample_alert_delta: float = 0.05
    """On-sample monitor: the least fall of exact step validity of the update's own samples against the first
    update's (window and deltas: chosen on validation runs of ``procsup bench rl``, docs/rl.md)."""
    sample_alert_prm_delta: float | None = 0.03
    """On-sample monitor: the least rise of the PRM's mean step score over the same span (None:
    sample_alert_delta)."""
    sample_alert_rule: Literal["drift", "gap"] = "drift"
    """On-sample monitor: ``drift`` (``monitor.drift``: PRM up by ``sample_alert_prm_delta`` and validity down by
    ``sample_alert_delta``) or ``gap`` (``monitor.gap``: PRM minus validity up by ``sample_alert_delta``)."""
    reuse_coef: float = 0.0
    """Weight of a step-supervised (PAL) term on reused trajectories: ``reuse_coef x`` the mean token NLL of
    the generated tokens of the trajectories ``train(reuse=)`` returns for the update (e.g. corrected
    trajectories, docs/internalize.md; or the update's right samples: rejection-sampling fine-tuning)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gradient_accumulation_steps != 1:
            raise ValueError("gradient_accumulation_steps does not apply to rl: an update's optimizer steps are "
                             "ppo_epochs x minibatches")
        if self.max_length is not None:
            raise ValueError("max_length does not apply to rl: a sample's length is set by max_new_tokens")
        if self.step_reward not in STEP_REWARDS:
            raise ValueError(f"step_reward must be one of {STEP_REWARDS}, got {self.step_reward!r}")
        if self.credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, got {self.credit!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.step_reward == "prm" and self.prm is None and self.task is not None:
            raise ValueError("step_reward=prm needs prm (a PRM directory)")
        for name in ("group_size", "ppo_epochs", "minibatches", "alert_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (a group baseline needs other samples), got {self.group_size}")
        if self.minibatches > self.batch_size:
            raise ValueError(f"minibatches {self.minibatches} > batch_size {self.batch_size} problems")
        if self.alert_rule not in RULES:
            raise ValueError(f"alert_rule must be one of {RULES}, got {self.alert_rule!r}")
        if self.sample_alert_rule not in ("drift", "gap"):
            raise ValueError(f"sample_alert_rule must be 'drift' or 'gap', got {self.sample_alert_rule!r}")
        if self.sample_alert_window < 0:
            raise ValueError(f"sample_alert_window must be >= 0, got {self.sample_alert_window}")
        if self.alert_prm_delta is not None and not (math.isfinite(self.alert_prm_delta) and self.alert_prm_delta >= 0):
            raise ValueError(f"alert_prm_delta must be a finite number >= 0 or None, got {self.alert_prm_delta}")
        if self.sample_alert_prm_delta is not None and not (math.isfinite(self.sample_alert_prm_delta)
                                                            and self.sample_alert_prm_delta >= 0):
            raise ValueError(f"sample_alert_prm_delta must be a finite number >= 0 or None, got {self.sample_alert_prm_delta}")
        for name in ("outcome_coef", "step_coef", "kl_coef", "eval_steps", "alert_delta", "sample_alert_delta",
                     "reuse_coef"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.outcome_coef == 0 and (self.step_reward == "none" or self.step_coef == 0) and self.reuse_coef == 0:
            raise ValueError("no reward: outcome_coef is 0, there is no step reward (or step_coef is 0) and "
                             "reuse_coef is 0")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        for name in ("temperature", "softmin_temperature", "clip_eps"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 or None, got {self.max_new_tokens}")
        if self.sample_batch_size is not None and self.sample_batch_size < 1:
            raise ValueError(f"sample_batch_size must be >= 1 or None, got {self.sample_batch_size}")


@dataclass
class RLResult:
    model: torch.nn.Module
    tokenizer: Any
    updates: int
    """Updates run by this call (a resumed run counts from its checkpoint)."""
    samples: int
    """Policy samples of the whole run (generated steps, an answer line counting as one; all processes)."""
    seconds: float
    final_metrics: dict
    evals: list[dict] = field(default_factory=list)
    """The monitor's evaluations of this call (each with ``update`` and ``samples``)."""
    alert: dict | None = None
    """The first monitor alert, if any (``source``: ``held-out`` evaluation or the update's ``samples``)."""
    sample_history: list[dict] = field(default_factory=list)
    """Per update (whole run): the watched PRM's mean step score and the exact step validity of its samples."""


# --- samples -> tokens ------------------------------------------------------------------------------------
def trace_rows(trajectories: Sequence[Trajectory], tokenizer, fmt: StepFormat) -> tuple[list[Row], list[bool], list[bool]]:
    """Rows of sampled history traces for the loss: ``(rows, kept, cut_sep)``.

    An answered trace is laid out in ``history`` (``x · sep_in · a_1 · sep · … · ans · y · eos``), an
    unanswered one in ``steps`` (no answer, no EOS). ``kept[i]``: the row gives back the sample's generated
    token count (``meta['tokens']``, EOS excluded), so the loss may train on it; ``cut_sep[i]``: an
    unanswered trace whose last step had no separator (one token fewer was generated than the row has), whose
    last token must then stay out of the loss. Trajectories need ``meta['answer']`` and ``meta['tokens']``
    (:func:`procsup.rollout.complete` sets both)."""
    answered = [t.meta.get("answer") is not None for t in trajectories]
    hist = tokenize_many([t for t, a in zip(trajectories, answered) if a], tokenizer, fmt, "history")
    steps = tokenize_many([t for t, a in zip(trajectories, answered) if not a], tokenizer, fmt, "steps")
    it_h, it_s = iter(hist), iter(steps)
    rows, kept, cut = [], [], []
    for t, a in zip(trajectories, answered):
        row = next(it_h) if a else next(it_s)
        generated = sum(s != PROMPT for s in row.segment_ids) - (1 if a else 0)  # EOS was cut by generate
        tokens = int(t.meta["tokens"])
        rows.append(row)
        cut.append(not a and generated == tokens + 1 and len(t.steps) > 0)
        kept.append(generated == tokens or cut[-1])
    return rows, kept, cut


def token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probabilities of each next token (B, T - 1) under ``softmax(logits / temperature)``."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
    return -token_nll(logits / temperature, input_ids)


# --- rewards -> advantages ----------------------------------------------------------------------------------
def step_returns(rewards: Sequence[Sequence[float]], credit: str, gamma: float = 1.0,
                 temperature: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """One reward list per sample -> returns (B, S) and mask (B, S) by the credit form (see the module)."""
    values, mask = pad_steps(rewards)
    if credit == "sum":
        return returns_to_go(values, mask, gamma), mask
    if credit == "min":
        return min_returns(values, mask), mask
    if credit == "softmin":
        return returns_to_go(softmin_rewards(values, mask, temperature), mask), mask
    raise ValueError(f"credit must be one of {CREDITS}, got {credit!r}")


def sample_rewards(trajectories: Sequence[Trajectory], step_scores: Sequence[Sequence[float]] | None) -> list[list[float]]:
    """``[r_1, ..., r_n, o]`` per sample: its step scores, then its outcome as the answer step."""
    outcomes = [float(bool(t.meta["correct"])) for t in trajectories]
    if step_scores is None:
        return [[o] for o in outcomes]
    if any(len(s) != len(t.steps) for s, t in zip(step_scores, trajectories)):
        raise ValueError("the step scorer must give one score per step of each trajectory")
    return [[*map(float, s), o] for s, o in zip(step_scores, outcomes)]


def token_advantages(rows_segments: torch.Tensor, rewards: Sequence[Sequence[float]], group_size: int,
                     cfg: RLConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Advantages (B, T) on the tokens of ``segment_ids`` (B, T) (PROMPT tokens 0), from each sample's
    ``[r_1..r_n, o]``; also the parts (outcome, step; per sample or per step) for logging and tests."""
    outcome = torch.tensor([r[-1] for r in rewards]).view(-1, group_size)  # (N, G)
    a_out = (group_normalized_advantages(outcome) if cfg.baseline == "grpo" else rloo_advantages(outcome)).reshape(-1)  # (B,)
    generated = rows_segments != PROMPT  # (B, T)
    adv = cfg.outcome_coef * a_out[:, None] * generated
    parts = {"outcome": a_out}
    if cfg.step_reward != "none" and cfg.step_coef > 0:
        returns, mask = step_returns(rewards, cfg.credit, cfg.gamma, cfg.softmin_temperature)  # (B, S + 1)
        a_step = group_step_advantages(returns, mask, group_size, cfg.baseline)  # (B, S + 1)
        answer_at = torch.tensor([len(r) - 1 for r in rewards])  # (B,): the answer step's column
        a_answer = a_step.gather(1, answer_at[:, None]).squeeze(1)  # (B,)
        on_tokens, _ = step_to_token(a_step, rows_segments, a_answer)  # (B, T)
        adv = adv + cfg.step_coef * on_tokens
        parts.update(step=a_step, returns=returns)
    return adv, parts


# --- the trainer ------------------------------------------------------------------------------------------
def _sample_seed(seed: int, update: int, rank: int) -> int:
    return (seed * 1_000_003 + update) * 1009 + rank


RL_STATE_FILE = "rl_state.json"
"""In each checkpoint, beside ``trainer_state.json``: the run's policy-sample count, the monitors' histories
and the first alert (what a resumed run needs beyond the weights, optimizer and schedule)."""
MONITOR_FILE = "monitor.jsonl"


def _read_rl_state(cfg: RLConfig, step: int) -> dict:
    path = Path(cfg.output_dir) / f"checkpoint-{step}" / RL_STATE_FILE
    if not path.is_file():
        raise ValueError(f"cannot resume: {path} is missing (a checkpoint written by a procsup before 2026-12-07 "
                         f"that stopped while saving); remove checkpoint-{step} to resume from the one before, "
                         f"or start a new run")
    return json.loads(path.read_text())


def train(
    cfg: RLConfig, *, task, scorer: StepScorer | None = None, model=None, tokenizer=None,
    fmt: StepFormat | None = None, problems: Sequence[Any] | None = None, eval_problems: Sequence[Any] | None = None,
    monitor_scorer: StepScorer | None = None, extra_eval: Callable[[Any, int], dict] | None = None,
    reuse: Callable[[Sequence[Trajectory]], Sequence[Trajectory]] | None = None,
    accelerator: Accelerator | None = None,
) -> RLResult:
    """Train the history-mode policy ``model`` (or ``cfg.model``) on ``problems`` (or ``cfg.train_file``'s) of
    ``task``, in ``cfg.output_dir``, which this run holds (:func:`~procsup.trainers.loop.claim_output_dir`)
    until it ends. ``scorer``: the step scorer for ``step_reward`` exact or prm (e.g. ``exact_scorer(task,
    "history")``, ``load_prm_scorer(path)``). ``monitor_scorer``: the PRM the gaming monitor watches (default:
    ``scorer`` when step_reward=prm); the monitor runs on ``eval_problems`` every ``cfg.eval_steps``, and on
    every update's own samples. ``extra_eval(model, update)``: more numbers for each monitor line (e.g.
    accuracy on other problem sets). ``reuse(samples)``: with ``cfg.reuse_coef > 0``, the trajectories to add
    as a step-supervised term to this update's loss (called after the scorer, with the update's samples)."""
    accelerator = accelerator or make_accelerator(cfg)
    with claim_output_dir(accelerator, cfg):
        return _train(cfg, task, scorer, model, tokenizer, fmt, problems, eval_problems, monitor_scorer, extra_eval,
                      reuse, accelerator)


def reuse_rows(trajectories: Sequence[Trajectory], tokenizer, fmt: StepFormat) -> list[Row]:
    """Rows of reused trajectories for the step-supervised term: answered ones in ``history`` layout (steps,
    answer, EOS: the whole written trace), unanswered ones are skipped (nothing right to imitate)."""
    return tokenize_many([t for t in trajectories if t.meta.get("answer") is not None or t.target], tokenizer, fmt,
                         "history")


def reuse_nll(model, batch: dict, temperature: float) -> torch.Tensor:
    """Mean NLL (at ``logits / temperature``, the sampled distribution) of the generated tokens of a collated
    batch of reused rows: every non-PROMPT next-token position."""
    logps = token_logps(model, batch["input_ids"], batch["attention_mask"], temperature)  # (R, T - 1)
    mask = (batch["segment_ids"][:, 1:] != PROMPT).float()
    return -(logps * mask).sum() / mask.sum().clamp(min=1)


def _train(cfg, task, scorer, model, tokenizer, fmt, problems, eval_problems, monitor_scorer, extra_eval, reuse,
           accelerator) -> RLResult:
    if model is None:
        if cfg.model is None:
            raise ValueError("no model: set RLConfig.model to a local model directory or pass model=")
        model, tokenizer, saved = load_model(cfg.model)
        fmt = fmt or resolve_format(saved, cfg.model)
    fmt = fmt or StepFormat()
    train_file = None
    if problems is None:
        if cfg.train_file is None:
            raise ValueError("no problems: set RLConfig.train_file or pass problems=")
        train_file = cfg.train_file
        problems = [task.problem_of(t) for t in read_jsonl(cfg.train_file)]
    if eval_problems is None and cfg.eval_file is not None:
        eval_problems = [task.problem_of(t) for t in read_jsonl(cfg.eval_file)]
    if not problems:
        raise ValueError("no problems to train on")
    if cfg.step_reward != "none" and scorer is None:
        raise ValueError(f"step_reward={cfg.step_reward} needs a step scorer (scorer=)")
    if cfg.eval_steps and not eval_problems:
        raise ValueError("eval_steps is set but there are no held-out problems (eval_problems= or eval_file)")
    if cfg.reuse_coef > 0 and reuse is None:
        raise ValueError("reuse_coef > 0 needs reuse= (the trajectories to reuse at each update)")
    monitor_scorer = monitor_scorer or (scorer if cfg.step_reward == "prm" else None)
    out_dir = Path(cfg.output_dir)
    rank = accelerator.process_index
    model = prepare_model(model, cfg)
    ref_model = None
    if cfg.kl_coef > 0:  # the starting policy, frozen, before a checkpoint is loaded into the policy
        ref_model = copy.deepcopy(model).eval().requires_grad_(False).to(accelerator.device)
    run = Run(data_source(train_file))
    per_proc, optimizer, scheduler, start_step = start_run(accelerator, model, cfg, run, cfg.lr_schedule)
    state = {"samples": 0, "evals": [], "alert": None, "sample_history": []}
    if start_step:
        restored = _read_rl_state(cfg, start_step)
        state = {k: restored.get(k, v) for k, v in state.items()}
        if accelerator.is_main_process:
            cut_metrics(out_dir / MONITOR_FILE, start_step)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.eval()  # no dropout: the policy trained is the policy that sampled
    policy_model = accelerator.unwrap_model(model)
    saved = SavedFormat("policy", fmt, "history", base_model=cfg.model, data=run.data)  # procsup.json

    monitor = GamingMonitor(task, fmt, eval_problems or [], monitor_scorer, window=cfg.alert_window,
                            delta=cfg.alert_delta, history=state["evals"], rule=cfg.alert_rule,
                            prm_delta=cfg.alert_prm_delta)
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc="rl", dynamic_ncols=True,
               disable=not (cfg.progress and accelerator.is_local_main_process))
    metrics = MetricsLog(out_dir, bar, main_process=accelerator.is_main_process,
                         accelerator=start_trackers(accelerator, cfg, "procsup-rl"))
    t0, last, evals, step = time.perf_counter(), {}, [], start_step

    def checkpoint(done: int) -> None:
        save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, cfg, done, saved=saved, run=run,
                        metrics={k: v for k, v in last.items() if isinstance(v, (int, float))},
                        extra_files={RL_STATE_FILE: {"step": done, **state, "evals": monitor.history}})

    def run_monitor(done: int) -> dict | None:
        result = monitor.evaluate(policy_model, tokenizer, update=done, samples=state["samples"])
        if extra_eval is not None:
            result.update(extra_eval(policy_model, done))
        result["step"] = done
        evals.append(result)
        if accelerator.is_main_process:
            with (out_dir / MONITOR_FILE).open("a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
        return result

    if start_step == 0 and cfg.eval_steps and eval_problems:
        run_monitor(0)
    for step in range(start_step, cfg.max_steps):
        # 1. sample: this process's slice of the update's problems, G each
        idx = global_batch(len(problems), cfg.batch_size, step, cfg.seed)[rank * per_proc : (rank + 1) * per_proc]
        policy = LMPolicy(policy_model, tokenizer, task, fmt, mode="history", temperature=cfg.temperature,
                          max_new_tokens=cfg.max_new_tokens, batch_size=cfg.sample_batch_size)
        groups = complete(policy, start(task, [problems[i] for i in idx]), n=cfg.group_size,
                          seed=_sample_seed(cfg.seed, step, rank))
        trajs = [t for g in groups for t in g]  # (B = per_proc * G), a group's samples adjacent

        # 2. rewards; 3. advantages on tokens
        scores = scorer(trajs) if cfg.step_reward != "none" else None
        rewards = sample_rewards(trajs, scores)
        rows, kept, cut = trace_rows(trajs, tokenizer, fmt)
        batch = {k: v.to(accelerator.device) for k, v in collate(rows, tokenizer.pad_token_id).items()}
        segments = batch["segment_ids"]  # (B, T)
        adv, _ = token_advantages(segments.cpu(), rewards, cfg.group_size, cfg)  # (B, T)
        loss_mask = (segments != PROMPT) & torch.tensor(kept, device=segments.device)[:, None]  # (B, T)
        lengths = batch["attention_mask"].sum(1)  # (B,)
        for b in (i for i, c in enumerate(cut) if c):  # the separator the budget cut off was never sampled
            loss_mask[b, lengths[b] - 1] = False
        adv, loss_mask = adv[:, 1:].to(accelerator.device), loss_mask[:, 1:]  # next-token positions (B, T - 1)
        reused = list(reuse(trajs)) if cfg.reuse_coef > 0 else []
        reuse_batch = None
        if reused:
            reuse_batch = {k: v.to(accelerator.device)
                           for k, v in collate(reuse_rows(reused, tokenizer, fmt), tokenizer.pad_token_id).items()}

        # 4. clipped policy gradient (+ KL, + the reuse term), ppo_epochs x minibatches optimizer steps
        with torch.no_grad():
            ref_logps = None if ref_model is None else token_logps(ref_model, batch["input_ids"], batch["attention_mask"],
                                                                   cfg.temperature)
            off_policy = cfg.ppo_epochs * cfg.minibatches > 1
            old_logps = token_logps(model, batch["input_ids"], batch["attention_mask"], cfg.temperature) if off_policy else None
        order_gen = torch.Generator().manual_seed(_sample_seed(cfg.seed, step, rank) + 1)
        n_groups = len(groups)
        terms_sum = torch.zeros(len(LOSS_TERMS), device=accelerator.device)
        n_terms = 0
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(n_groups, generator=order_gen) if cfg.minibatches > 1 else torch.arange(n_groups)
            for chunk in perm.chunk(min(cfg.minibatches, n_groups)):
                sel = (chunk[:, None] * cfg.group_size + torch.arange(cfg.group_size)).reshape(-1).to(accelerator.device)
                logps = token_logps(model, batch["input_ids"][sel], batch["attention_mask"][sel], cfg.temperature)
                terms = policy_gradient_loss(
                    logps, adv[sel], loss_mask[sel], old_logps=None if old_logps is None else old_logps[sel],
                    clip_eps=cfg.clip_eps, ref_logps=None if ref_logps is None else ref_logps[sel], kl_coef=cfg.kl_coef,
                )
                terms["reuse_nll"] = torch.zeros((), device=accelerator.device)
                if reuse_batch is not None:
                    terms["reuse_nll"] = reuse_nll(model, reuse_batch, cfg.temperature)
                    terms["loss"] = terms["loss"] + cfg.reuse_coef * terms["reuse_nll"]
                accelerator.backward(terms["loss"])
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                terms_sum += torch.stack([terms[k].detach() for k in LOSS_TERMS])
                n_terms += 1
        lr = scheduler.get_last_lr()[0]
        scheduler.step()

        # logging: means over processes, counts summed; the on-sample monitor reads the update's own samples
        samples_here = sum(int(t.meta["samples"]) for t in trajs)
        verdicts = exact_steps(task, trajs)
        validity = [all(v) for v in verdicts]
        watched = scores if monitor_scorer is scorer and scores is not None else (
            monitor_scorer(trajs) if monitor_scorer is not None else None)
        local = torch.tensor([
            samples_here, len(trajs), sum(bool(t.meta["correct"]) for t in trajs), sum(validity),
            sum(bool(t.meta["correct"]) and not v for t, v in zip(trajs, validity)),
            sum(t.meta["answer"] is not None for t in trajs), sum(not k for k in kept), sum(len(t.steps) for t in trajs),
            sum(int(t.meta["tokens"]) for t in trajs),
            sum(sum(s) for s in scores) if scores is not None else 0.0, sum(len(s) for s in scores) if scores else 0,
            sum(sum(s) for s in watched) if watched is not None else 0.0, sum(len(s) for s in watched) if watched else 0,
            sum(x for v in verdicts for x in v), sum(len(v) for v in verdicts), len(reused),
        ], dtype=torch.float64, device=accelerator.device)
        totals = accelerator.reduce(local, reduction="sum").tolist()
        reduced = accelerator.reduce(terms_sum / n_terms, reduction="mean").tolist()
        state["samples"] += int(totals[0])
        done = step + 1
        n = max(totals[1], 1)
        sample_alert = False
        if totals[12]:  # a PRM watched: its mean step score vs the exact step validity of the same samples
            state["sample_history"].append({"update": done, "prm_score": totals[11] / totals[12],
                                            "exact_validity": totals[13] / max(totals[14], 1),
                                            "accuracy": totals[2] / n, "trace_validity": totals[3] / n,
                                            "right_answer_wrong_steps": totals[4] / n,
                                            "steps_per_sample": totals[7] / n})
            sample_alert = bool(cfg.sample_alert_window) and (
                drift(state["sample_history"], cfg.sample_alert_window, cfg.sample_alert_delta, cfg.sample_alert_prm_delta)
                if cfg.sample_alert_rule == "drift"
                else gap(state["sample_history"], cfg.sample_alert_window, cfg.sample_alert_delta))
        if done % cfg.log_steps == 0 or done == cfg.max_steps or sample_alert:
            last = {
                "step": done, **dict(zip(LOSS_TERMS, reduced)), "lr": lr,
                "reward_outcome": totals[2] / n, "accuracy": totals[2] / n, "trace_validity": totals[3] / n,
                "right_answer_wrong_steps": totals[4] / n, "answered": totals[5] / n,
                "reward_step": totals[9] / totals[10] if totals[10] else None,
                "sample_prm_score": totals[11] / totals[12] if totals[12] else None,
                "sample_exact_validity": totals[13] / max(totals[14], 1), "sample_alert": sample_alert,
                "reused": int(totals[15]),
                "steps_per_sample": totals[7] / n, "tokens_per_sample": totals[8] / n,
                "dropped": totals[6] / n, "samples": state["samples"], "samples_update": int(totals[0]),
                "seconds": time.perf_counter() - t0,
            }
            metrics.write(last, f"update {done}", acc=f"{last['accuracy']:.3f}", valid=f"{last['trace_validity']:.3f}")
        bar.update(1)
        alert = {"update": done, "samples": state["samples"], "source": "samples", **state["sample_history"][-1]} \
            if sample_alert else None
        if cfg.eval_steps and eval_problems and (done % cfg.eval_steps == 0 or done == cfg.max_steps):
            result = run_monitor(done)
            if result["alert"] and alert is None:
                alert = {**result, "source": "held-out"}
        if alert is not None and state["alert"] is None:
            state["alert"] = alert
            if cfg.stop_on_alert:
                checkpoint(done)
                break
        if cfg.save_steps and done % cfg.save_steps == 0 and done != cfg.max_steps:
            checkpoint(done)
    else:
        checkpoint(cfg.max_steps)
    bar.close()
    if cfg.report_to != "none":
        accelerator.end_training()
    model = accelerator.unwrap_model(model)
    return RLResult(model, tokenizer, step + 1 - start_step if cfg.max_steps > start_step else 0, state["samples"],
                    time.perf_counter() - t0, last, evals, state["alert"], state["sample_history"])


def main(cfg: RLConfig, *, task, scorer: StepScorer | None = None, monitor_scorer: StepScorer | None = None) -> RLResult:
    """``procsup rl``: :func:`train` from ``cfg`` alone (model, problems and held-out problems from disk);
    the command line builds ``task`` from ``cfg.task`` and the scorers (the task's exact checker, or the PRM
    in ``cfg.prm``), which live on a floor above ``rl/``."""
    return train(cfg, task=task, scorer=scorer, monitor_scorer=monitor_scorer)
