"""Token generation with any Hugging Face causal LM: the one call behind every sampler in procsup.

:func:`generate` is greedy (``temperature=None``) or sampled, batched with left padding, stops at EOS,
at a stop string or after ``max_new_tokens``, and returns new tokens only. With ``n > 1`` samples per
prompt the prompt is encoded once and its KV cache copied to the ``n`` rows (``kv_reuse``), instead of
encoding ``n`` copies: transformers' ``generate`` continues from a given cache, so this needs no custom
decode loop (transformers >= 5.25 names it ``cache``).

With ``positions`` (a task's :data:`~procsup.data.positions.PositionRule`) it runs its own decode loop,
:func:`_decode`, since ``generate`` numbers new tokens 1, 2, 3, ... past the prompt: each new token is
fed with the id the rule gives it on the row so far, so a model trained on rows with task-given ids
(position coupling) is sampled with the same ids it was trained and scored with.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from procsup.data.batch import pad
from procsup.data.positions import PositionRule, token_texts


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's global generator (which ``generate`` samples from) for the block, and restore it after,
    so that sampling here neither depends on nor disturbs the caller's random state."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _cut(toks: list[int], eos: int, pad_id: int | None) -> list[int]:
    toks = toks[: toks.index(eos)] if eos in toks else toks
    while pad_id is not None and toks and toks[-1] == pad_id:  # a row that stopped on a stop string is padded
        toks = toks[:-1]
    return toks


def _prefill(model, ids: torch.Tensor, mask: torch.Tensor, n: int):
    """The KV cache of every prompt but its last token, computed once and repeated ``n`` times per row
    (row i's copies adjacent, as ``num_return_sequences`` orders them). Positions follow ``generate``'s
    rule for left padding: the cumulative count of real tokens, padding at 1."""
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # (B, T)
    cache = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True).cache
    cache.batch_repeat_interleave(n)
    return cache


@torch.inference_mode()
def generate(
    model, tokenizer, prompts: Sequence[Sequence[int]], *, n: int = 1, max_new_tokens: int,
    temperature: float | None = None, stop_strings: Sequence[str] | None = None, batch_size: int = 64,
    kv_reuse: bool = True, positions: PositionRule | None = None,
) -> list[list[list[int]]]:
    """``out[i][j]``: continuation j of token-id prompt i (new tokens only; EOS and padding cut).

    ``temperature=None`` is greedy decoding (``n`` must be 1); prompts are then batched longest first, so
    that a batch pads little. Sampling (``temperature > 0``, full distribution: no top-k/top-p) keeps the
    prompts' order and puts ``batch_size // n`` prompts in a call, each repeated ``n`` times; it draws from
    torch's global generator: wrap calls in :func:`seeded`. Samples depend on ``batch_size`` (the batch's
    composition changes the random draws). A row stops at EOS, after ``max_new_tokens``, or once it
    contains one of ``stop_strings`` (kept in the output). ``kv_reuse`` encodes each prompt once for its
    ``n`` samples (same samples up to float rounding, tested). ``positions``: task-given position ids
    (:func:`_decode`; the prompt is always encoded once for its ``n`` samples there)."""
    greedy = temperature is None
    if n < 1 or (not greedy and temperature <= 0) or (greedy and n != 1):
        raise ValueError(f"need n >= 1 and temperature > 0 (or None: greedy, n = 1), got n={n}, temperature={temperature}")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
    eos, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.eval()
    extra = {"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}
    sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    # greedy: longest first, so that a batch holds prompts of similar length (its output does not depend on
    # the order); sampling: the given order, which the random draws follow
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i])) if greedy else list(range(len(prompts)))
    per_batch = max(1, batch_size // n)
    out: dict[int, list[list[int]]] = {}
    for start in range(0, len(order), per_batch):
        idx = order[start : start + per_batch]
        ids, mask = pad([prompts[i] for i in idx], pad_id, side="left")  # (b, W)
        if positions is not None:
            gen = _decode(model, tokenizer, [prompts[i] for i in idx], n, max_new_tokens, temperature, stop_strings,
                          positions)
            for row, i in enumerate(idx):
                out[i] = gen[row * n : (row + 1) * n]
            continue
        ids, mask, width = ids.to(model.device), mask.to(model.device), ids.size(1)
        if kv_reuse and n > 1 and width > 1:
            cache = _prefill(model, ids, mask, n)
            ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)  # (b * n, W)
            reps, kw = 1, {"cache": cache}
        else:
            reps, kw = n, {}
        gen = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, num_return_sequences=reps,
            eos_token_id=eos, pad_token_id=pad_id, **sampling, **extra, **kw,
        )[:, width:].tolist()  # (b * n, new): the n samples of a prompt are adjacent
        for row, i in enumerate(idx):
            # greedy rows run without stop strings, so only EOS ends them (and a generated pad id is kept)
            out[i] = [_cut(toks, eos, None if greedy else pad_id) for toks in gen[row * n : (row + 1) * n]]
    return [out[i] for i in range(len(prompts))]


def _decode(
    model, tokenizer, prompts: Sequence[Sequence[int]], n: int, max_new_tokens: int, temperature: float | None,
    stop_strings: Sequence[str] | None, rule: PositionRule,
) -> list[list[int]]:
    """The decode loop with task-given positions: ``n`` continuations of each prompt (rows of a prompt
    adjacent), greedy or sampled from the full distribution, with a KV cache. The prompt is encoded once
    (left-padded, its padding at id 0 and masked) and its cache repeated ``n`` times; each sampled token is
    then fed with ``rule(row so far)[-1]``. Same stopping and output as :func:`generate`: EOS (cut), a stop
    string (kept), or ``max_new_tokens``."""
    eos, pad_id, device = tokenizer.eos_token_id, tokenizer.pad_token_id, model.device
    texts: dict[int, str] = {}
    rows = [token_texts(tokenizer, p, texts) for p in prompts]
    ids, mask = pad(prompts, pad_id, side="left")  # (b, W)
    pos, _ = pad([rule(r) for r in rows], 0, side="left")  # (b, W)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=True)
    cache, logits = out.cache, out.logits[:, -1]  # logits (b, V)
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)  # (b * n, ...)
    rows = [list(r) for r in rows for _ in range(n)]
    new: list[list[int]] = [[] for _ in rows]
    live = [True] * len(rows)
    mask = mask.to(device)
    for _ in range(max_new_tokens):
        if temperature is None:
            nxt = logits.argmax(-1)  # (b * n,)
        else:
            nxt = torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1)[:, 0]
        step_pos = []
        for r, tok in enumerate(nxt.tolist()):
            if not live[r]:
                step_pos.append(0)
                continue
            if tok == eos:
                live[r] = False
                step_pos.append(0)
                continue
            new[r].append(tok)
            rows[r].extend(token_texts(tokenizer, [tok], texts))
            if stop_strings and any(s in "".join(rows[r][len(rows[r]) - len(new[r]):]) for s in stop_strings):
                live[r] = False
            step_pos.append(rule(rows[r])[-1])
        if not any(live):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)  # (b * n, W + t)
        feed = nxt.masked_fill(~torch.tensor(live, device=device), pad_id if pad_id is not None else eos)
        out = model(input_ids=feed[:, None], attention_mask=mask, position_ids=torch.tensor(step_pos, device=device)[:, None],
                    cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1]
    return new
