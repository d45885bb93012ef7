"""Models: tiny models of each architecture survive save -> load exactly (safetensors only), local loading
fails clearly, and the character tokenizer is lossless on printable text."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from procsup.models.factory import DEFAULT_CHARSET, TinyModelConfig, build_tiny_model, load_model, save_model


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_save_load_round_trip(tmp_path, char_tok, arch):
    cfg = TinyModelConfig(arch=arch, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=64)
    model, tok = build_tiny_model(cfg, char_tok, seed=0)
    model.eval()
    ids = torch.tensor([tok("12+34 | k:2,4\nA:46", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        want = model(input_ids=ids).logits

    path = save_model(model, tok, tmp_path / arch)
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    assert not list(path.glob("*.bin"))
    loaded, loaded_tok, saved = load_model(path)
    assert saved is None  # no step format given: a base model
    loaded.eval()
    assert loaded.config.model_type == arch and loaded.config.hidden_size == 16
    assert loaded_tok.pad_token_id == tok.pad_token_id and loaded_tok.eos_token_id == tok.eos_token_id
    assert loaded_tok("12+34", add_special_tokens=False)["input_ids"] == tok("12+34", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, want)


def test_build_is_deterministic_in_seed(char_tok):
    cfg = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2)
    a, b, c = (build_tiny_model(cfg, char_tok, seed=s)[0].state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_load_model_needs_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="config.json") as e:
        load_model(tmp_path)
    assert str(tmp_path) in str(e.value)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(sorted(set(DEFAULT_CHARSET))), max_size=40))
def test_char_tokenizer_round_trip(char_tok, text):
    ids = char_tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character, "\n\n" and "  " included
    assert char_tok.unk_token_id not in ids
    assert char_tok.decode(ids) == text


def test_char_tokenizer_unknown_characters(char_tok):
    ids = char_tok("a\tb", add_special_tokens=False)["input_ids"]
    assert ids[1] == char_tok.unk_token_id and len(ids) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(arch="mamba"), "arch"),
        (dict(hidden_size=30, num_heads=4), "divisible"),
        (dict(num_heads=0), "positive"),
        (dict(num_layers=0), "positive"),
        (dict(hidden_size=0), "positive"),
        (dict(max_positions=0), "positive"),
    ],
)
def test_tiny_model_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TinyModelConfig(**kwargs)


def test_text_that_reads_like_a_special_token_stays_text(char_tok, tmp_path):
    """Found by the round-trip property: data containing "<eos>" must not end a sequence."""
    for tok in (char_tok, None):
        if tok is None:  # and after save/load
            char_tok.save_pretrained(tmp_path)
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tmp_path)
        ids = tok("<eos><pad><unk>", add_special_tokens=False)["input_ids"]
        assert len(ids) == 15 and not {tok.eos_token_id, tok.pad_token_id, tok.unk_token_id} & set(ids)
