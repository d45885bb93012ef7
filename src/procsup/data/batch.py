"""Padding tokenized rows into tensors: shared by the trainers and the PRM scorer."""

from __future__ import annotations

from typing import Sequence

import torch

from procsup.data.tokenize import PROMPT, Row


def collate(rows: Sequence[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, segment_ids (padding is PROMPT: no loss)."""
    lengths = [len(r.input_ids) for r in rows]
    width = max(lengths)
    # one torch.tensor per field, not one per row: that loop was most of a state-mode step's data work
    ids = torch.tensor([[*r.input_ids, *[pad_id] * (width - n)] for r, n in zip(rows, lengths)])  # (B, T)
    segs = torch.tensor([[*r.segment_ids, *[PROMPT] * (width - n)] for r, n in zip(rows, lengths)])  # (B, T)
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()  # (B, T)
    return {"input_ids": ids, "attention_mask": mask, "segment_ids": segs}
