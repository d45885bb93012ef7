"""Padding token rows into tensors: the one padding rule of procsup (trainers, PRM scoring, generation)."""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from procsup.data.tokenize import PROMPT, Row


def pad(seqs: Sequence[Sequence[int]], value: int, side: Literal["right", "left"] = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """``(padded (B, T), attention_mask (B, T))`` of token-id sequences, padded with ``value``.

    ``right`` for training and scoring (positions count from the first token); ``left`` for generation
    prompts, so that every row's next token is appended at the same column."""
    lengths = [len(s) for s in seqs]
    width = max(lengths)
    # one torch.tensor per field, not one per row: that loop was most of a state-mode step's data work
    if side == "right":
        ids = torch.tensor([[*s, *[value] * (width - n)] for s, n in zip(seqs, lengths)], dtype=torch.long)
        mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    elif side == "left":
        ids = torch.tensor([[*[value] * (width - n), *s] for s, n in zip(seqs, lengths)], dtype=torch.long)
        mask = (torch.arange(width) >= width - torch.tensor(lengths)[:, None]).long()
    else:
        raise ValueError(f"side must be right or left, got {side!r}")
    return ids, mask


def collate(rows: Sequence[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, segment_ids (padding is PROMPT: no loss), and
    position_ids (padding at 0) when the rows carry task-given ids (all of them or none)."""
    ids, mask = pad([r.input_ids for r in rows], pad_id)  # (B, T)
    segs, _ = pad([r.segment_ids for r in rows], PROMPT)  # (B, T)
    batch = {"input_ids": ids, "attention_mask": mask, "segment_ids": segs}
    given = [r.position_ids is not None for r in rows]
    if any(given):
        if not all(given):
            raise ValueError(f"{given.count(False)} of {len(rows)} rows have no position_ids: a batch mixes the "
                             "model's default positions with task-given ones")
        batch["position_ids"], _ = pad([r.position_ids for r in rows], 0)  # (B, T)
    return batch
