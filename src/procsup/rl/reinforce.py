"""Outcome-only RL baseline: REINFORCE on the success reward.

Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement learning",
Machine Learning 8 (1992). The policy is the same :class:`~procsup.models.action_head.ActionHeadModel`
that action-head PAL trains, run in the task's executor; actions are sampled from ``softmax(logits)``.
The only signal is the outcome: ``R = 1`` if the episode ends with a right answer (in the grid task: all
waypoints reached in order), else 0. An illegal action ends the episode (R = 0). The gradient estimate
over a batch of B episodes is

    g = (1/B) sum_i (R_i - b_i) sum_t grad log pi(a_it | s_it)

with baseline ``b`` either an exponential moving average of past batch returns (``ema``, Williams's
reinforcement comparison; it does not depend on the current batch, so g stays unbiased) or the mean
return of the *other* episodes of the batch (``batch``: leave-one-out, also unbiased). The loss is
:func:`procsup.objectives.policy_gradient.reinforce_loss`, the leave-one-out baseline
:func:`procsup.rl.advantages.leave_one_out_baseline`.

The budget is counted in environment steps (executed actions, illegal ones included), so that RL can be
given exactly as many environment steps as PAL's demonstrations contain; ``max_updates`` bounds the
number of updates instead (or as well), so that RL can be given as many optimizer updates as PAL. Episodes still running when the
budget is spent are cut (R = 0) and still used in the last update. Single process; constant learning
rate (the number of updates depends on episode lengths, so it is not known in advance); the policy is kept
in eval mode so that the gradient is that of the policy that sampled (dropout off).

Logged (``metrics.jsonl``, every ``log_steps`` updates): ``update``, ``env_steps`` and ``episodes``
(cumulative), and for the update's batch ``return`` (mean R), ``success`` (share of episodes with a right
answer: equal to ``return`` under this 0/1 reward), ``episode_len`` (mean actions per episode),
``illegal`` (share ended by an illegal action), ``baseline`` (mean b), ``entropy`` (mean policy entropy
over the visited states, nats) and ``loss``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from procsup.models.action_head import ActionHeadModel
from procsup.objectives.policy_gradient import reinforce_loss
from procsup.rl.advantages import leave_one_out_baseline
from procsup.rollout import ActionHeadPolicy, complete, start
from procsup.trainers.loop import MetricsLog, claim_output_dir

BASELINES = ("ema", "batch")


@dataclass
class ReinforceConfig:
    """A REINFORCE run. Build it in Python, from YAML or from ``key=value`` flags."""

    output_dir: str
    """Where ``metrics.jsonl`` and the final policy (``output_dir/model``) go."""
    env_steps: int
    """Budget in environment steps (executed actions), e.g. the number of steps in the PAL demonstrations."""
    max_updates: int | None = None
    """Stop after this many policy-gradient updates even if ``env_steps`` is not spent (None: ``env_steps``
    alone bounds the run): to give RL as many optimizer updates as a supervised run."""
    episodes_per_update: int = 32
    """Episodes sampled per policy-gradient update (problems drawn uniformly with replacement)."""
    learning_rate: float = 1e-4
    """AdamW learning rate (constant). On the grid task with a 2-layer, 64-wide model, 3e-4 and above
    collapsed to a nearly deterministic policy before the first successes could teach it anything."""
    baseline: Literal["ema", "batch"] = "ema"
    """ema: moving average of past batch returns; batch: leave-one-out mean of the batch's other returns."""
    baseline_decay: float = 0.9
    """ema only: ``b <- decay * b + (1 - decay) * mean(R)`` after each update (b starts at 0)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    max_episode_steps: int | None = None
    """Actions per episode at most (default: 4 x the longest expert trajectory of the batch; the task may
    end episodes sooner, e.g. the grid's step_limit)."""
    seed: int = 0
    """Seed of the problem draws and of action sampling."""
    log_steps: int = 1
    """Write a metrics line every this many updates."""
    progress: bool = True
    """Show a progress bar (in environment steps)."""

    def __post_init__(self) -> None:
        for name in ("env_steps", "episodes_per_update", "log_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_updates is not None and self.max_updates < 1:
            raise ValueError(f"max_updates must be >= 1 or None, got {self.max_updates}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {self.max_episode_steps}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be >= 0, got {self.max_grad_norm}")


@dataclass
class ReinforceResult:
    policy: ActionHeadModel
    env_steps: int
    """Environment steps used (<= the budget)."""
    episodes: int
    updates: int
    seconds: float
    final_metrics: dict


def train_reinforce(
    cfg: ReinforceConfig, *, policy: ActionHeadModel, task, problems: Sequence[Any],
    accelerator: Accelerator | None = None,
) -> ReinforceResult:
    """Train ``policy`` with REINFORCE on episodes of ``task`` started from ``problems``."""
    accelerator = accelerator or Accelerator()
    if accelerator.num_processes > 1:
        raise ValueError("train_reinforce runs in one process; launch it without --num_processes")
    if not problems:
        raise ValueError("no problems to start episodes from")
    with claim_output_dir(accelerator, cfg):  # a folder of its own, locked: no second run writes into it
        return _train(cfg, policy, task, problems, accelerator)


def _train(cfg: ReinforceConfig, policy: ActionHeadModel, task, problems: Sequence[Any], accelerator) -> ReinforceResult:
    out_dir = Path(cfg.output_dir)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    policy.eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    action_index = {a: i for i, a in enumerate(policy.actions)}

    bar = tqdm(total=cfg.env_steps, desc="reinforce", disable=not cfg.progress, dynamic_ncols=True, unit="step")
    used, episodes_total, updates, ema, last, t0 = 0, 0, 0, 0.0, {}, time.perf_counter()
    metrics = MetricsLog(out_dir, bar)
    while used < cfg.env_steps and (cfg.max_updates is None or updates < cfg.max_updates):
        pick = torch.randint(len(problems), (cfg.episodes_per_update,), generator=gen).tolist()
        actor = ActionHeadPolicy(policy, task, generator=gen, max_steps=cfg.max_episode_steps)
        rolled = complete(actor, start(task, [problems[i] for i in pick]), max_env_steps=cfg.env_steps - used)
        episodes = [ts[0] for ts in rolled if ts[0].steps]  # cut by the budget before their first step
        n_steps = sum(len(e.steps) for e in episodes)
        if n_steps == 0:
            raise ValueError("no episode took a step: every problem is done in its initial state")
        used += n_steps
        episodes_total += len(episodes)

        returns = torch.tensor([float(e.meta["correct"]) for e in episodes], device=accelerator.device)  # (B,)
        if cfg.baseline == "ema":
            baseline = torch.full_like(returns, ema)
            ema = cfg.baseline_decay * ema + (1 - cfg.baseline_decay) * returns.mean().item()
        else:
            baseline = leave_one_out_baseline(returns)
        advantages = returns - baseline  # (B,)
        states = [s.state for e in episodes for s in e.steps]
        taken = torch.tensor([action_index[s.action] for e in episodes for s in e.steps], device=accelerator.device)  # (N,)
        step_episode = torch.tensor(
            [i for i, e in enumerate(episodes) for _ in e.steps], device=accelerator.device
        )  # (N,)
        logps = torch.log_softmax(policy.state_logits(states).float(), -1)  # (N, A)
        step_logps = logps.gather(-1, taken[:, None]).squeeze(-1)  # (N,)
        loss = reinforce_loss(step_logps, step_episode, advantages)
        accelerator.backward(loss)
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        updates += 1

        if updates % cfg.log_steps == 0 or used >= cfg.env_steps or updates == cfg.max_updates:
            last = {
                "update": updates,
                "env_steps": used,
                "episodes": episodes_total,
                "return": returns.mean().item(),
                "success": sum(bool(e.meta["correct"]) for e in episodes) / len(episodes),
                "episode_len": n_steps / len(episodes),
                "illegal": sum(bool(e.meta["failed"]) for e in episodes) / len(episodes),
                "baseline": baseline.mean().item(),
                "entropy": -(logps.exp() * logps).sum(-1).mean().item(),
                "loss": loss.item(),
            }
            metrics.write(last, f"update {updates}", ret=f"{last['return']:.3f}", len=f"{last['episode_len']:.1f}")
        bar.update(n_steps)
    bar.close()
    policy = accelerator.unwrap_model(policy)
    policy.save(out_dir / "model")
    return ReinforceResult(policy, used, episodes_total, updates, time.perf_counter() - t0, last)
