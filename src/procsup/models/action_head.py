"""A causal LM backbone with a separate action head, and its state-mode rollout.

Kartik & Shah (2025), section 3: "If the model has a separate action head, we attach a classification
loss there". :class:`ActionHeadModel` reads the backbone's last-layer hidden state at the last token of the
state prompt ``s_t · input_sep`` (:func:`procsup.data.tokenize.prompt_ids`: the same prompt an LM policy is
given in state mode, at the position where it would decide its first action token) and maps it with one
``Linear(hidden, A)`` to logits over a fixed action vocabulary. Any Hugging Face causal LM works: the
hidden states come from its ``base_model`` (``model.model`` for llama/qwen2, ``transformer`` for gpt2,
``gpt_neox`` for neox), so the vocabulary logits are never computed.

It acts in a task's executor as a :class:`procsup.rollout.ActionHeadPolicy` (greedy or sampled), through
the same :func:`procsup.rollout.complete` as every other policy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from procsup.data.batch import pad
from procsup.data.tokenize import StepFormat, prompt_ids
from procsup.models.factory import load_model, save_model
from procsup.models.saved import FORMAT_FILE, check_kind, load_format, save_format

HEAD_FILE, ACTIONS_FILE = "action_head.safetensors", "actions.json"


class ActionHeadModel(torch.nn.Module):
    """``logits(s) = W h_last(s) + b`` over ``actions``, with ``h_last`` the backbone's final hidden state at
    the last non-padding token (left or right padding both work)."""

    def __init__(self, backbone, tokenizer, actions: Sequence[str], fmt: StepFormat = StepFormat(), seed: int = 0):
        super().__init__()
        actions = tuple(actions)
        if not actions or len(set(actions)) != len(actions) or not all(isinstance(a, str) and a for a in actions):
            raise ValueError(f"actions must be distinct non-empty strings, got {actions!r}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token (load_model uses eos)")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.actions = actions
        self.fmt = fmt
        with torch.random.fork_rng():  # the head's init is a function of seed, not of the global RNG
            torch.manual_seed(seed)
            self.head = torch.nn.Linear(backbone.config.hidden_size, len(actions))
        self.head.to(device=backbone.device, dtype=backbone.dtype)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T), attention_mask (B, T) -> logits (B, A)."""
        # positions count real tokens only, so that a left-padded prompt is seen as the same prompt
        # (it matters for learned absolute positions, gpt2)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        hidden = self.backbone.base_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state  # (B, T, H)
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        last = (attention_mask * positions).argmax(-1)  # (B,) index of the last real token
        return self.head(hidden[torch.arange(hidden.size(0), device=hidden.device), last])  # (B, A)

    def encode(self, states: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded state prompts ``s · input_sep`` on the model's device: input_ids, attention_mask (B, T)."""
        cache = {s: prompt_ids(self.tokenizer, s, self.fmt) for s in set(states)}  # states repeat a lot
        ids, mask = pad([cache[s] for s in states], self.tokenizer.pad_token_id)  # (B, T), right-padded
        return ids.to(self.device), mask.to(self.device)

    def state_logits(self, states: Sequence[str]) -> torch.Tensor:
        """logits (B, A) of rendered states."""
        return self(*self.encode(states))

    @torch.no_grad()
    def act(self, states: Sequence[str]) -> list[str]:
        """The greedy action for each rendered state."""
        if not states:
            return []
        return [self.actions[i] for i in self.state_logits(states).argmax(-1).tolist()]

    def save(self, path: str | Path) -> Path:
        """Backbone and tokenizer as :func:`procsup.models.factory.save_model` writes them, plus the head
        (``action_head.safetensors``), ``actions.json`` (the action vocabulary) and ``procsup.json`` (kind
        action-head, the step format, mode state)."""
        path = save_model(self.backbone, self.tokenizer, path)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, path / HEAD_FILE)
        (path / ACTIONS_FILE).write_text(json.dumps({"actions": list(self.actions)}, indent=1), encoding="utf-8")
        save_format(path, "action-head", self.fmt, "state")
        return path

    @classmethod
    def load(cls, path: str | Path, *, trust_remote_code: bool = False) -> "ActionHeadModel":
        """The inverse of :meth:`save` (safetensors only, local files only). The step format comes from
        ``procsup.json``; saves older than it kept the format in ``actions.json``, which is still read (and
        must agree with ``procsup.json`` when both have one)."""
        path = Path(path)
        if not (path / HEAD_FILE).is_file() or not (path / ACTIONS_FILE).is_file():
            raise FileNotFoundError(f"{path}: not an action-head model (needs {HEAD_FILE} and {ACTIONS_FILE})")
        saved = load_format(path)
        check_kind(saved, "action-head", path)
        meta = json.loads((path / ACTIONS_FILE).read_text(encoding="utf-8"))
        fmt = saved.step_format if saved is not None else None
        if "step_format" in meta:  # a save older than procsup.json
            old = StepFormat(**meta["step_format"])
            if fmt is not None and old != fmt:
                raise ValueError(f"{path}: the step format in {ACTIONS_FILE} ({old}) disagrees with {FORMAT_FILE} ({fmt})")
            fmt = old
        if fmt is None:
            raise ValueError(f"{path}: no step format (neither {FORMAT_FILE} nor 'step_format' in {ACTIONS_FILE})")
        backbone, tokenizer, _ = load_model(path, trust_remote_code=trust_remote_code)
        model = cls(backbone, tokenizer, meta["actions"], fmt)
        model.head.load_state_dict(load_file(path / HEAD_FILE))
        return model
