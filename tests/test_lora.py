"""LoRA and frozen lower layers on tiny models: what trains, what the merge gives, what the checkpoints load as
(the trainers' ``lora`` option group: PAL and PRM)."""

from __future__ import annotations

import json

import pytest
import torch

from procsup.config import build_config
from procsup.data.trajectory import Step, Trajectory
from procsup.models.factory import TinyModelConfig, build_tiny_model, load_model, save_model
from procsup.models.prm import build_prm, load_prm, score

peft = pytest.importorskip("peft")

from procsup.models.lora import (  # noqa: E402  (after the importorskip: the module needs peft)
    LoRAConfig,
    apply_lora,
    freeze_lower_layers,
    merge_lora,
    save_adapter,
    trainable_parameters,
)
from procsup.trainers.pal import PALConfig, train  # noqa: E402
from procsup.trainers.prm import PRMConfig, train_prm  # noqa: E402

MODEL = TinyModelConfig(arch="llama", hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64, max_positions=128)
X = torch.tensor([[5, 9, 12, 30, 7, 44]])
# Merged and unmerged forwards differ by float32 rounding only: at most 7.5e-6 over 200 random adapter draws
# at std 0.5 (6.6e-5 at std 1, which failed a CI run at 1e-5); a wrong merge (scale, transpose) is off by ~0.1.
TOL = 1e-4


def _as_if_trained(model, std: float = 0.5) -> None:
    """Non-zero adapters (B starts at zero), drawn from a fixed generator so no test depends on test order."""
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=gen) * std)


def test_lora_starts_as_the_model_and_trains_only_the_adapters(char_tok):
    model, _ = build_tiny_model(MODEL, char_tok)
    base_total = sum(p.numel() for p in model.parameters())
    before = model(X).logits
    apply_lora(model, LoRAConfig(r=4))
    assert torch.equal(model(X).logits, before)  # B = 0 at the start
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    trainable, total = trainable_parameters(model)
    assert trainable == 3 * 4 * (4 * 32 + 32 * 4) and total == base_total + trainable  # layers x projections x (A + B)
    with pytest.raises(ValueError, match="r >= 1"):
        apply_lora(model, LoRAConfig(r=0))
    with pytest.raises(ValueError, match="lora.r must be >= 0"):
        LoRAConfig(r=-1)


def test_lora_on_chosen_blocks_only(char_tok):
    model, _ = build_tiny_model(MODEL, char_tok)
    apply_lora(model, LoRAConfig(r=4, layers=(2,), target_modules=("q_proj", "v_proj")))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("model.layers.2.") for n in names)
    assert trainable_parameters(model)[0] == 2 * 4 * (32 + 32)
    with pytest.raises(ValueError, match="not found in the base model"):
        apply_lora(build_tiny_model(MODEL, char_tok)[0], LoRAConfig(r=4, layers=(7,)))


def test_state_dict_of_an_adapted_model_is_the_merged_plain_model(char_tok):
    """What every trainer's checkpoint writes: plain keys, merged weights, the model itself unchanged."""
    model, _ = build_tiny_model(MODEL, char_tok)
    plain, _ = build_tiny_model(MODEL, char_tok, seed=1)
    apply_lora(model, LoRAConfig(r=4))
    _as_if_trained(model)
    state = model.state_dict()
    assert set(state) == set(plain.state_dict())
    assert any("lora_A" in n for n, _ in model.named_parameters())  # still adapted
    plain.load_state_dict(state)
    assert torch.allclose(plain(X).logits, model(X).logits, atol=TOL)


def test_merge_gives_a_plain_model_with_the_adapted_outputs(char_tok, tmp_path):
    model, _ = build_tiny_model(MODEL, char_tok)
    keys = set(model.state_dict())
    apply_lora(model, LoRAConfig(r=4))
    _as_if_trained(model)
    adapted = model(X).logits
    merge_lora(model)
    assert set(model.state_dict()) == keys
    assert torch.allclose(model(X).logits, adapted, atol=TOL)
    save_model(model, char_tok, tmp_path / "m")
    reloaded, _, _ = load_model(tmp_path / "m")
    assert torch.allclose(reloaded(X).logits, adapted, atol=TOL)


def test_saved_adapter_loads_with_peft_on_the_base_model(char_tok, tmp_path):
    base, _ = build_tiny_model(MODEL, char_tok)
    base.save_pretrained(tmp_path / "base")
    model, _ = build_tiny_model(MODEL, char_tok)
    cfg = LoRAConfig(r=4)
    apply_lora(model, cfg)
    _as_if_trained(model)
    save_adapter(model, cfg, tmp_path / "adapter", base_model=str(tmp_path / "base"))
    from peft import PeftModel

    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert torch.allclose(loaded(X).logits, model(X).logits, atol=TOL)


def test_freeze_lower_layers(char_tok):
    model, _ = build_tiny_model(MODEL, char_tok)
    freeze_lower_layers(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.2.", "model.norm.")) for n in trainable)  # head tied: frozen
    with pytest.raises(ValueError, match="trainable_top"):
        freeze_lower_layers(model, 4)


TRAJS = [Trajectory(f"{a}+{b}", str(a + b), (Step(f"{a}+{b}={a + b}", label=(a + b) % 2 == 0),), meta={"mode": "history"})
         for a in range(4) for b in range(4)]


def _metric_losses(folder) -> list[float]:
    return [r["loss"] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_pal_with_the_lora_option_trains_the_adapters_and_saves_a_plain_model(char_tok, tmp_path):
    model, _ = build_tiny_model(MODEL, char_tok)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = PALConfig(output_dir=str(tmp_path / "pal"), mode="history", max_steps=30, batch_size=8, learning_rate=5e-2,
                    warmup_steps=0, log_steps=1, save_steps=15, progress=False, lora=LoRAConfig(r=4, alpha=8))
    result = train(cfg, model=model, tokenizer=char_tok, trajectories=TRAJS)
    trainable, total = trainable_parameters(result.model)
    base = sum(v.numel() for k, v in start.items() if k != "lm_head.weight")  # tied to the embeddings
    assert trainable == 3 * 4 * 4 * (32 + 32) and total == base + trainable  # layers x projections x r x (in + out)
    losses = _metric_losses(tmp_path / "pal")
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2  # ~9.0 -> ~8.7
    for step in (15, 30):  # the intermediate checkpoint too: every checkpoint is a plain model
        loaded, _, saved = load_model(tmp_path / "pal" / f"checkpoint-{step}")
        state = loaded.state_dict()
        assert saved.kind == "policy" and set(state) == set(start)
        changed = {k for k in start if not torch.equal(start[k], state[k])}
        assert changed and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"))
                               for k in changed)
    assert torch.allclose(loaded(X).logits, result.model(X).logits, atol=TOL)
    recorded = json.loads((tmp_path / "pal" / "checkpoint-30" / "trainer_state.json").read_text())["config"]["lora"]
    assert recorded["r"] == 4 and recorded["alpha"] == 8


def test_lora_is_off_by_default_and_set_from_flags(tmp_path):
    assert not PALConfig(output_dir="x").lora.enabled and not PRMConfig(output_dir="x").lora.enabled
    cfg = build_config(PALConfig, overrides=[f"output_dir={tmp_path}", "lora.r=8", "lora.alpha=32", "lora.dropout=0.1",
                                             "lora.target_modules=q_proj,v_proj", "lora.layers=20,29"])
    assert cfg.lora == LoRAConfig(r=8, alpha=32.0, dropout=0.1, target_modules=("q_proj", "v_proj"), layers=(20, 29))
    with pytest.raises(ValueError, match="lora.r must be >= 0"):
        build_config(PALConfig, overrides=[f"output_dir={tmp_path}", "lora.r=-2"])
    assert PALConfig(output_dir="x", resume=True, lora=LoRAConfig(r=4)).resume  # resumable: test_lora_run_resumes_exactly


def test_full_fine_tune_unchanged_without_lora(char_tok, tmp_path):
    model, _ = build_tiny_model(MODEL, char_tok)
    cfg = PALConfig(output_dir=str(tmp_path / "pal"), mode="history", max_steps=2, batch_size=4, warmup_steps=0,
                    progress=False)
    result = train(cfg, model=model, tokenizer=char_tok, trajectories=TRAJS)
    trainable, total = trainable_parameters(result.model)
    assert trainable == total and not any("lora_" in n for n, _ in result.model.named_parameters())


def test_prm_with_the_lora_option_trains_the_head_and_scores_from_the_checkpoint(char_tok, tmp_path):
    base, _ = build_tiny_model(MODEL, char_tok)
    save_model(base, char_tok, tmp_path / "base")
    prm = build_prm(tmp_path / "base", seed=0)
    head = prm.score.weight.clone()
    cfg = PRMConfig(output_dir=str(tmp_path / "prm"), max_steps=5, batch_size=4, learning_rate=1e-2, warmup_steps=0,
                    progress=False, lora=LoRAConfig(r=4))
    result = train_prm(cfg, model=prm, tokenizer=char_tok, trajectories=TRAJS)
    trainable = {n for n, p in result.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("score.") for n in trainable)
    loaded, tok, saved = load_prm(tmp_path / "prm" / "checkpoint-5")
    assert saved.kind == "prm" and not torch.equal(loaded.score.weight, head)
    got, want = score(loaded, tok, TRAJS[:3]), score(result.model, char_tok, TRAJS[:3])
    assert sum(got, []) == pytest.approx(sum(want, []), abs=1e-5)


class _Crash(Exception):
    pass


def test_lora_run_resumes_exactly(char_tok, tmp_path, monkeypatch):
    """A LoRA run's checkpoint carries its adapters (adapters.safetensors) beside the merged weights: 12 steps
    straight == 6 steps, a crash after checkpoint-6, and resume=True onto the starting model, to the bit."""
    from procsup.trainers import pal as pal_trainer

    def cfg(name, **kw):
        return PALConfig(output_dir=str(tmp_path / name), mode="history", max_steps=12, batch_size=4,
                         learning_rate=5e-2, warmup_steps=0, log_steps=1, save_steps=6, progress=False,
                         lora=LoRAConfig(r=4, alpha=8), **kw)

    straight = train(cfg("straight"), model=build_tiny_model(MODEL, char_tok)[0], tokenizer=char_tok,
                     trajectories=TRAJS).model
    save = pal_trainer.save_checkpoint

    def save_then_crash(*args, **kwargs):
        save(*args, **kwargs)
        if args[-1] == 6:
            raise _Crash

    monkeypatch.setattr(pal_trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(_Crash):
        train(cfg("crashed"), model=build_tiny_model(MODEL, char_tok)[0], tokenizer=char_tok, trajectories=TRAJS)
    monkeypatch.setattr(pal_trainer, "save_checkpoint", save)
    assert (tmp_path / "crashed" / "checkpoint-6" / "adapters.safetensors").is_file()
    resumed = train(cfg("crashed", resume=True), model=build_tiny_model(MODEL, char_tok)[0], tokenizer=char_tok,
                    trajectories=TRAJS)
    assert resumed.steps == 6
    want = dict(straight.named_parameters())
    for name, p in resumed.model.named_parameters():
        torch.testing.assert_close(p, want[name], rtol=0, atol=0, msg=name)
    # a resume onto a model without the run's adapters is refused by the recorded settings
    with pytest.raises(ValueError, match="lora"):
        train(PALConfig(output_dir=str(tmp_path / "crashed"), mode="history", max_steps=12, batch_size=4,
                        learning_rate=5e-2, warmup_steps=0, log_steps=1, save_steps=6, progress=False, resume=True),
              model=build_tiny_model(MODEL, char_tok)[0], tokenizer=char_tok, trajectories=TRAJS)
