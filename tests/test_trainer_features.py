"""The trainers' expected features and their guards: gradient accumulation and gradient checkpointing give
the same numbers, eval_file is logged with an eval_ prefix, max_length names the record (never a bare
IndexError), special-token text stays text, checkpoints describe themselves, models load from local
folders or the hub cache only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from procsup.data.io import write_jsonl
from procsup.data.tokenize import StepFormat, tokenize_many
from procsup.data.trajectory import Step, Trajectory
from procsup.models.factory import TinyModelConfig, build_tiny_model, load_model, resolve_model, save_model
from procsup.models.prm import build_prm, score
from procsup.models.saved import load_format
from procsup.trainers.pal import PALConfig, train
from procsup.trainers.prm import PRMConfig, train_prm

from conftest import TINY


def pal_config(out: Path, **overrides) -> PALConfig:
    values = dict(output_dir=str(out), batch_size=8, max_steps=2, warmup_steps=0, learning_rate=1e-3, log_steps=1,
                  progress=False)
    return PALConfig(**{**values, **overrides})


def metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(Path(out) / f"checkpoint-{step}" / "model.safetensors")


def labelled(trajs, every=2) -> list[Trajectory]:
    return [Trajectory(t.input, t.target, tuple(Step(s.action, label=(i + j) % every == 0) for j, s in enumerate(t.steps)))
            for i, t in enumerate(trajs)]


@pytest.mark.parametrize("extra", [dict(gradient_accumulation_steps=4), dict(gradient_checkpointing=True)])
def test_pal_accumulation_and_checkpointing_give_the_same_update(tmp_path, char_tok, history_trajs, extra):
    runs = {}
    for name, kw in (("plain", {}), ("other", extra)):
        model, _ = build_tiny_model(TINY, char_tok, seed=0)
        train(pal_config(tmp_path / name, **kw), model=model, tokenizer=char_tok, trajectories=history_trajs)
        runs[name] = metrics(tmp_path / name), weights(tmp_path / name, 2)
    (m1, w1), (m2, w2) = runs["plain"], runs["other"]
    for a, b in zip(m1, m2):
        for k in ("loss", "loss_out", "loss_steps"):
            assert a[k] == pytest.approx(b[k], rel=1e-6), k  # float32: 1e-6 of the value
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize("extra", [dict(gradient_accumulation_steps=2), dict(gradient_checkpointing=True)])
def test_prm_accumulation_and_checkpointing_give_the_same_update(tmp_path, char_tok, history_trajs, extra):
    save_model(*build_tiny_model(TINY, char_tok, seed=0), tmp_path / "backbone")
    data = labelled(history_trajs, every=3)  # unequal labelled steps per micro-batch: weights by step count
    runs = {}
    for name, kw in (("plain", {}), ("other", extra)):
        cfg = PRMConfig(output_dir=str(tmp_path / name), model=str(tmp_path / "backbone"), batch_size=4, max_steps=2,
                        warmup_steps=0, learning_rate=1e-3, log_steps=1, progress=False, **kw)
        train_prm(cfg, trajectories=data)
        runs[name] = metrics(tmp_path / name), weights(tmp_path / name, 2)
    (m1, w1), (m2, w2) = runs["plain"], runs["other"]
    assert [a["loss"] for a in m1] == pytest.approx([b["loss"] for b in m2], rel=1e-6)
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=1e-6, msg=k)


def test_eval_file_is_logged_with_an_eval_prefix(tmp_path, char_tok, history_trajs):
    held_out = tmp_path / "eval.jsonl"
    write_jsonl(history_trajs[:3], held_out)
    model, _ = build_tiny_model(TINY, char_tok, seed=0)
    result = train(pal_config(tmp_path / "pal", eval_file=str(held_out), max_steps=4, log_steps=2), model=model,
                   tokenizer=char_tok, trajectories=history_trajs)
    evals = [m for m in metrics(tmp_path / "pal") if "eval_loss" in m]
    assert [m["step"] for m in evals] == [2, 4]
    assert set(evals[0]) == {"step", "eval_loss", "eval_loss_out", "eval_loss_steps", "eval_step_nll", "eval_loss_consistency"}
    assert result.final_metrics["eval_loss"] == evals[-1]["eval_loss"]

    save_model(*build_tiny_model(TINY, char_tok, seed=0), tmp_path / "backbone")
    write_jsonl(labelled(history_trajs[:4]), held_out)
    cfg = PRMConfig(output_dir=str(tmp_path / "prm"), model=str(tmp_path / "backbone"), batch_size=4, max_steps=2,
                    eval_file=str(held_out), progress=False)
    train_prm(cfg, trajectories=labelled(history_trajs))
    (line,) = [m for m in metrics(tmp_path / "prm") if "eval_loss" in m]
    assert set(line) == {"step", "eval_loss", "eval_step_accuracy", "eval_auroc"} and 0 <= line["eval_auroc"] <= 1


def test_new_fields_are_validated(tmp_path):
    for field, value, match in [("dtype", "float16", "dtype"), ("report_to", "tensorbored", "report_to"),
                                ("gradient_accumulation_steps", 3, "divisible"), ("max_length", 0, "max_length"),
                                ("eval_steps", -1, "eval_steps")]:
        with pytest.raises(ValueError, match=match):
            PALConfig(output_dir=str(tmp_path), batch_size=8, **{field: value})
    with pytest.raises(ValueError, match="mu > 0"):
        PALConfig(output_dir=str(tmp_path), batch_size=8, mu=0.1, gradient_accumulation_steps=2)


def test_bfloat16_trains(tmp_path, char_tok, history_trajs):
    model, _ = build_tiny_model(TINY, char_tok, seed=0)
    result = train(pal_config(tmp_path / "bf16", dtype="bfloat16"), model=model, tokenizer=char_tok,
                   trajectories=history_trajs)
    assert next(result.model.parameters()).dtype == torch.bfloat16
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics(tmp_path / "bf16"))


def test_a_row_longer_than_the_positions_names_its_line(tmp_path, char_tok, history_trajs):
    """Before: a gpt2 backbone died with a bare IndexError past its positions."""
    gpt2 = TinyModelConfig(arch="gpt2", hidden_size=32, num_layers=1, num_heads=2, max_positions=100)
    data = tmp_path / "train.jsonl"
    long = Trajectory("1+1", "2", tuple(Step("1+1=2" * 5) for _ in range(4)))
    write_jsonl([history_trajs[0], long, history_trajs[1]], data)
    model, _ = build_tiny_model(gpt2, char_tok, seed=0)
    with pytest.raises(ValueError, match=rf"^{data}:2: \d+ tokens, longer than max_length 100 "):
        train(pal_config(tmp_path / "a", train_file=str(data)), model=model, tokenizer=char_tok)
    rejects = tmp_path / "rejects.jsonl"
    result = train(pal_config(tmp_path / "b", train_file=str(data), rejects_file=str(rejects), batch_size=2),
                   model=model, tokenizer=char_tok)
    assert result.steps == 2
    (reject,) = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert reject["record"] == 1 and "longer than max_length 100" in reject["error"]
    with pytest.raises(ValueError, match="trajectory 0: .* longer than max_length 8"):
        train(pal_config(tmp_path / "c", max_length=8), model=model, tokenizer=char_tok, trajectories=history_trajs)


def test_scoring_a_row_past_the_positions_is_a_clear_error(tmp_path, char_tok):
    gpt2 = TinyModelConfig(arch="gpt2", hidden_size=32, num_layers=1, num_heads=2, max_positions=30)
    save_model(*build_tiny_model(gpt2, char_tok, seed=0), tmp_path / "backbone")
    prm = build_prm(tmp_path / "backbone", seed=0)
    with pytest.raises(ValueError, match="trajectory 1: .* longer than max_length 30"):
        score(prm, char_tok, [Trajectory("1", "", (Step("a"),)), Trajectory("1", "", (Step("x" * 40),))])


@pytest.fixture(scope="module")
def hub_tok():
    """A BPE whose eos is ``<|endoftext|>`` and whose ``split_special_tokens`` is False, as hub tokenizers are."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<|endoftext|>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["step one ends here\nA:4 the end"] * 20, trainer)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|endoftext|>",
                                  additional_special_tokens=["<eos>"], clean_up_tokenization_spaces=False)
    assert out.split_special_tokens is False
    return out


@pytest.mark.parametrize("mode", ["history", "state", "outcome", "steps"])
def test_special_token_text_in_data_is_text(hub_tok, mode):
    """Before: with such a tokenizer the text <|endoftext|> in a step became the EOS id mid-row."""
    traj = Trajectory("q <eos>", "4<|endoftext|>", (Step("a <|endoftext|> b", state="s<eos>"),))
    (row, *_) = tokenize_many([traj], hub_tok, StepFormat(), mode)
    special = set(hub_tok.all_special_ids)
    body = row.input_ids[:-1] if mode != "steps" else row.input_ids  # the closing EOS is procsup's own
    assert not special & set(body)
    assert hub_tok.decode(body).count("<|endoftext|>") + hub_tok.decode(body).count("<eos>") >= 1


def test_checkpoints_describe_themselves(tmp_path, char_tok, history_trajs):
    save_model(*build_tiny_model(TINY, char_tok, seed=0), tmp_path / "backbone")
    data = tmp_path / "lab.jsonl"
    write_jsonl([Trajectory(t.input, t.target, t.steps, meta={"label_source": "oracle"}) for t in labelled(history_trajs)],
                data)
    cfg = PRMConfig(output_dir=str(tmp_path / "prm"), model=str(tmp_path / "backbone"), train_file=str(data),
                    batch_size=4, max_steps=2, progress=False)
    train_prm(cfg)
    ckpt = tmp_path / "prm" / "checkpoint-2"
    saved = load_format(ckpt)
    assert saved.base_model == str(tmp_path / "backbone") and saved.label_source == ("oracle",)
    assert saved.data["train_file"] == str(data) and len(saved.data["sha256"]) == 64
    assert saved.metrics["step"] == 2 and "loss" in saved.metrics
    config = json.loads((ckpt / "config.json").read_text())
    assert config["id2label"] == {"0": "wrong", "1": "right"}
    card = (ckpt / "README.md").read_text()
    for text in ("# procsup prm", "procsup score", "load_prm", str(data), "step_accuracy", "'\\n'"):
        assert text in card, text
    with pytest.raises(ValueError, match="is a PRM with a 2-output head .*soft=true needs a 1-output head"):
        build_prm(ckpt, soft=True)


def test_models_load_from_local_folders_or_the_hub_cache(tmp_path, char_tok, monkeypatch):
    with pytest.raises(FileNotFoundError, match=rf"^model folder {tmp_path / 'nope'} not found$"):
        load_model(tmp_path / "nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache; procsup loads local folders"):
        build_prm("org/tiny")
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    save_model(*build_tiny_model(TINY, char_tok, seed=0), snapshot)
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("abc123")
    assert resolve_model("org/tiny") == snapshot
    model, _, _ = load_model("org/tiny")
    assert model.config.hidden_size == TINY.hidden_size
