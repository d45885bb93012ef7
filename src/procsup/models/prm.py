"""Process reward models: any Hugging Face backbone with a token-classification head, scored in one pass.

A PRM reads each step's score at the step's boundary token (last token of step + separator), the
position :func:`procsup.objectives.prm.place_step_labels` trains. All steps of a trajectory are
scored in one forward pass: a causal model's output at a step's boundary depends only on the tokens up
to it, so this equals scoring every prefix separately, at one pass instead of n (tested). The last block
runs at the boundaries only (:mod:`procsup.models.positions`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer, PreTrainedModel

from procsup.data import views
from procsup.data.batch import collate
from procsup.data.tokenize import Row, StepFormat, check_length, step_boundaries, tokenize_many
from procsup.data.trajectory import Trajectory
from procsup.models.factory import max_positions, resolve_model
from procsup.models.positions import PositionReader
from procsup.models.saved import SavedFormat, check_kind, load_format

#: The classes a PRM head's outputs stand for, written into its config.json (Hugging Face's id2label).
HARD_LABELS = {0: "wrong", 1: "right"}
SOFT_LABELS = {0: "right"}
"""One logit: its sigmoid is P(step is right)."""


def build_prm(backbone: str | Path, *, soft: bool = False, classifier_dropout: float = 0.0,
              trust_remote_code: bool = False, seed: int | None = None) -> PreTrainedModel:
    """A PRM on a local backbone directory (or a cached hub id): a 2-class head (hard labels) or a 1-logit
    head (soft labels), its classes named in ``config.id2label``. On a causal LM the head is new (randomly
    initialised: from ``seed`` if given, without touching the caller's random state; else from torch's
    global generator as it stands); the backbone's weights are loaded (safetensors only). On a PRM
    checkpoint its trained head is kept, so the head must have the outputs asked for: ``soft`` on a 2-class
    PRM (or hard labels on a 1-logit one) is an error rather than a silently new head.

    Dropout before the head is off by default (transformers' token-classification heads default to
    0.1): with it, two runs of the same seed drift apart, and TRL's PRMTrainer turns it off too."""
    backbone = resolve_model(backbone)
    config = AutoConfig.from_pretrained(backbone, local_files_only=True, trust_remote_code=trust_remote_code)
    want = 1 if soft else 2
    is_prm = any(a.endswith("ForTokenClassification") for a in (config.architectures or []))
    if is_prm and config.num_labels != want:
        raise ValueError(
            f"{backbone} is a PRM with a {config.num_labels}-output head ({'soft' if config.num_labels == 1 else 'hard'} "
            f"labels); soft={str(soft).lower()} needs a {want}-output head: keep soft={str(config.num_labels == 1).lower()}, "
            "or train from the causal LM it was built on")
    config.num_labels = want
    config.id2label = dict(SOFT_LABELS if soft else HARD_LABELS)
    config.label2id = {v: k for k, v in config.id2label.items()}
    config.classifier_dropout = classifier_dropout

    def load() -> PreTrainedModel:
        return AutoModelForTokenClassification.from_pretrained(
            backbone, config=config, use_safetensors=True, local_files_only=True, trust_remote_code=trust_remote_code,
        )

    if seed is None:
        return load()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load()


def load_prm(path: str | Path, *, trust_remote_code: bool = False) -> tuple[PreTrainedModel, object, SavedFormat | None]:
    """A trained PRM (a checkpoint of :func:`~procsup.trainers.prm.train_prm`), its tokenizer and its
    ``procsup.json`` (None if the directory has none), from a local directory (safetensors only, no hub).
    A directory whose ``procsup.json`` records another kind (a policy, an action head) is refused."""
    saved = load_format(path)  # before the weights: a policy loads as a token classifier without complaint
    check_kind(saved, "prm", path)
    _check_has_prm_head(path)
    model = AutoModelForTokenClassification.from_pretrained(
        path, use_safetensors=True, local_files_only=True, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    return model, tokenizer, saved


def _check_has_prm_head(path: str | Path) -> None:
    """A folder without procsup.json is read as a PRM only if its weights hold a token-classification head:
    a causal LM (``procsup init-model``, any HF LM) would load with a random head and score at chance."""
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    architectures = config.architectures or []
    if architectures and not any(a.endswith("ForTokenClassification") for a in architectures):
        raise ValueError(f"{path} holds a {architectures[0]}, not a PRM: its scores would come from a random head; "
                         "train one with procsup train-prm model=" + str(path))


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """P(step is correct) from a PRM head's logits (..., C): softmax class 1 (C = 2) or sigmoid (C = 1)."""
    return logits.float().softmax(-1)[..., 1] if logits.size(-1) == 2 else logits.float()[..., 0].sigmoid()


def boundary_index(rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of every step boundary of a batch, row by row: where a PRM's scores are read."""
    bounds = [step_boundaries(row) for row in rows]
    at_rows = torch.tensor([i for i, b in enumerate(bounds) for _ in b], dtype=torch.long)
    at_cols = torch.tensor([pos for b in bounds for pos in b], dtype=torch.long)
    return at_rows, at_cols


def _per_row(values: list[float], rows: Sequence[Row]) -> list[list[float]]:
    it = iter(values)
    return [[next(it) for _ in step_boundaries(row)] for row in rows]


def step_probabilities(logits: torch.Tensor, rows: Sequence[Row]) -> list[list[float]]:
    """P(step is correct) at each step's boundary. logits (B, T, C) with C = 2 (softmax) or 1 (sigmoid)."""
    at_rows, at_cols = boundary_index(rows)
    return _per_row(probabilities(logits[at_rows, at_cols]).tolist(), rows)


@torch.inference_mode()
def score(model, tokenizer, trajectories: Sequence[Trajectory], fmt: StepFormat = StepFormat(),
          batch_size: int = 32, sparse_last_block: bool = True) -> list[list[float]]:
    """Per-step probabilities for each trajectory (its steps' actions, any labels ignored), one forward
    pass per batch, read at the step boundaries (``sparse_last_block``: the last block computed there
    only; the same scores up to float rounding)."""
    model.eval()
    reader = PositionReader(model, sparse=sparse_last_block)
    rows = tokenize_many(trajectories, tokenizer, fmt, "steps")
    check_length(rows, max_positions(model.config), [f"trajectory {i}" for i in range(len(rows))])
    out: list[list[float]] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = collate(chunk, tokenizer.pad_token_id)
        at_rows, at_cols = boundary_index(chunk)
        dev = model.device
        picked = reader(batch["input_ids"].to(dev), batch["attention_mask"].to(dev), at_rows.to(dev), at_cols.to(dev))
        out.extend(_per_row(probabilities(picked).tolist(), chunk))
    return out


def score_in_layout(model, tokenizer, trajectories: Sequence[Trajectory], fmt: StepFormat, layout: str,
                    batch_size: int = 32) -> list[list[float]]:
    """Per-step probabilities for state-mode trajectories read in ``layout`` (``trace``: one row per
    trajectory; ``step``: one row per step, see :mod:`procsup.data.views`)."""
    rows = views.in_layout(trajectories, layout)
    return views.regroup(score(model, tokenizer, rows, fmt, batch_size), trajectories, layout)
