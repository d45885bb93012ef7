"""Batched greedy generation with any Hugging Face causal LM (``model.generate``, left padding)."""

from __future__ import annotations

from typing import Sequence

import torch


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask (B, T) with the prompts right-aligned: generation starts at the right."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return ids, mask


@torch.inference_mode()
def greedy_generate(
    model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int = 256
) -> list[list[int]]:
    """Greedy continuations of token-id prompts, stopping at EOS; returns the new tokens only (EOS cut)."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.eval()
    # Longest first, so that a batch holds prompts of similar length (less padding).
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: dict[int, list[int]] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = left_pad([prompts[i] for i in idx], pad)
        width = ids.size(1)
        gen = model.generate(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=max_new_tokens,
            do_sample=False, eos_token_id=eos, pad_token_id=pad,
        )[:, width:].tolist()
        for row, i in enumerate(idx):
            toks = gen[row]
            results[i] = toks[: toks.index(eos)] if eos in toks else toks
    return [results[i] for i in range(len(prompts))]
