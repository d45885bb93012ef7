"""A token classifier read only where it is needed: the last block computed for those positions alone.

A PRM reads its head at step boundaries (one token in ten or so) and trains only there. In a causal
model every layer but the last must still run at every position (later tokens attend to them), but the
last block's output is only ever read at the chosen positions: its keys and values are needed at all
positions, while its query projection, attention, output projection, MLP, final norm and head are needed
only at the chosen ones. :class:`PositionReader` computes exactly that and returns the logits at the
chosen ``(row, column)`` positions, equal to ``model(...).logits[rows, cols]`` up to float rounding (the
loss and the gradients are the same function of the weights; tested).

Supported: Llama and Qwen2 token classifiers (pre-norm blocks with rotary attention, eager or SDPA, no
attention dropout, no sliding window in the last block); the fast path is tested against the full
forward for both. Any other model falls back to the full forward and indexing, with the same result.
On a 2-layer model this skips most of half the network's work; how much it saves is measured in
``benchmarks/prm_train_vs_trl.py``. transformers has nothing like it (``logits_to_keep`` trims only a
causal LM's vocabulary projection), hence this module.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_layers import GenericForTokenClassification
from transformers.models.llama import modeling_llama
from transformers.models.qwen2 import modeling_qwen2

#: Token classifiers whose last block the fast path computes, and each one's rotary function.
_SUPPORTED = {
    modeling_llama.LlamaForTokenClassification: modeling_llama.apply_rotary_pos_emb,
    modeling_qwen2.Qwen2ForTokenClassification: modeling_qwen2.apply_rotary_pos_emb,
}


def supports_sparse_last_block(model: nn.Module) -> bool:
    """Does :class:`PositionReader` take the fast path on ``model`` (else it runs the full forward)."""
    if type(model) not in _SUPPORTED or not isinstance(model, GenericForTokenClassification):
        return False
    backbone = getattr(model, model.base_model_prefix)
    attn = backbone.layers[-1].self_attn
    return (backbone.config._attn_implementation in ("eager", "sdpa") and not attn.attention_dropout
            and getattr(attn, "sliding_window", None) is None)


@contextmanager
def _without_last_block(backbone: nn.Module) -> Iterator[None]:
    """The backbone's own forward with its last block and final norm taken out, put back afterwards: all
    blocks but the last run exactly as transformers runs them (masks, positions, rotary included)."""
    layers, norm = backbone.layers, backbone.norm
    backbone.layers, backbone.norm = nn.ModuleList(list(layers)[:-1]), nn.Identity()
    try:
        yield
    finally:
        backbone.layers, backbone.norm = layers, norm


class PositionReader(nn.Module):
    """``model`` (a Hugging Face token classifier) as a module that returns its logits only at chosen
    positions: ``forward(input_ids, attention_mask, rows, cols) -> (K, num_labels)`` for the K positions
    ``(rows[k], cols[k])``. Wrap it (not the model) in DDP/accelerate so that every parameter's gradient
    flows through the wrapper's forward; save ``reader.model``. Padding on either side (positions are
    0..T-1 as in the model's own forward without ``position_ids``)."""

    def __init__(self, model: nn.Module, sparse: bool = True):
        super().__init__()
        self.model = model
        self.sparse = sparse and supports_sparse_last_block(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                cols: torch.Tensor) -> torch.Tensor:
        if not self.sparse:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[rows, cols]
        model = self.model
        if rows.numel() == 0:
            return model.score.weight.new_zeros(0, model.score.out_features)
        backbone = getattr(model, model.base_model_prefix)
        with _without_last_block(backbone):
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        block = backbone.layers[-1]
        attn = block.self_attn
        batch, width, _ = hidden.shape
        position_ids = torch.arange(width, device=hidden.device).unsqueeze(0)
        cos, sin = backbone.rotary_emb(hidden, position_ids=position_ids)  # (1, T, head_dim)
        rotate = _SUPPORTED[type(model)]

        # keys and values at every position
        normed = block.input_layernorm(hidden)
        kv_shape = (batch, width, -1, attn.head_dim)
        keys = attn.k_proj(normed).view(kv_shape).transpose(1, 2)  # (B, Hkv, T, hd)
        values = attn.v_proj(normed).view(kv_shape).transpose(1, 2)
        keys = rotate(keys, keys, cos, sin)[1]

        # queries only at the chosen positions, laid out (B, Q) with Q the most chosen in one row; a
        # position's slot is its rank among its row's positions (in the order given)
        counts = torch.bincount(rows, minlength=batch)
        by_row, order = torch.sort(rows, stable=True)
        slot = torch.empty_like(rows)
        slot[order] = torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[by_row]
        queries_per_row = int(counts.max())
        picked = normed[rows, cols]  # (K, D)
        q = attn.q_proj(picked).view(rows.numel(), -1, attn.head_dim)  # (K, H, hd)
        q_grid = q.new_zeros(batch, queries_per_row, *q.shape[1:])
        q_grid[rows, slot] = q
        q_grid = q_grid.transpose(1, 2)  # (B, H, Q, hd)
        q_pos = torch.zeros(batch, queries_per_row, dtype=torch.long, device=rows.device)
        q_pos[rows, slot] = cols
        q_grid = rotate(q_grid, q_grid, cos[0][q_pos], sin[0][q_pos])[0]  # cos per (row, slot): (B, Q, hd)

        # causal and padding mask per query; an empty slot sees key 0 only (its output is dropped), so
        # that no query row is all masked
        key_pos = torch.arange(width, device=rows.device)
        allowed = (key_pos[None, None, :] <= q_pos[:, :, None]) & attention_mask.bool()[:, None, :]
        empty = torch.ones(batch, queries_per_row, dtype=torch.bool, device=rows.device)
        empty[rows, slot] = False
        allowed[..., 0] |= empty
        groups = attn.num_key_value_groups
        out = F.scaled_dot_product_attention(
            q_grid, keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1),
            attn_mask=allowed[:, None], scale=attn.scaling,
        )  # (B, H, Q, hd)
        out = attn.o_proj(out.transpose(1, 2)[rows, slot].reshape(rows.numel(), -1))  # (K, D)

        h = hidden[rows, cols] + out
        h = h + block.mlp(block.post_attention_layernorm(h))
        return model.score(model.dropout(backbone.norm(h)))
