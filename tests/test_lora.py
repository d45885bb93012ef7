"""LoRA and frozen lower layers on tiny models: what trains, what the merge gives, what the checkpoints load as."""

from __future__ import annotations

import pytest
import torch

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
    train_with_lora,
    trainable_parameters,
)
from procsup.trainers.pal import PALConfig, train  # noqa: E402
from procsup.trainers.prm import PRMConfig, train_prm  # noqa: E402

MODEL = TinyModelConfig(arch="llama", hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64, max_positions=128)
X = torch.tensor([[5, 9, 12, 30, 7, 44]])


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
    with pytest.raises(ValueError, match="r must be"):
        LoRAConfig(r=0)


def test_merge_gives_a_plain_model_with_the_adapted_outputs(char_tok, tmp_path):
    model, _ = build_tiny_model(MODEL, char_tok)
    keys = set(model.state_dict())
    apply_lora(model, LoRAConfig(r=4))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_()  # as if trained
    adapted = model(X).logits
    merge_lora(model)
    assert set(model.state_dict()) == keys
    assert torch.allclose(model(X).logits, adapted, atol=1e-5)
    save_model(model, char_tok, tmp_path / "m")
    reloaded, _, _ = load_model(tmp_path / "m")
    assert torch.allclose(reloaded(X).logits, adapted, atol=1e-5)


def test_saved_adapter_loads_with_peft_on_the_base_model(char_tok, tmp_path):
    base, _ = build_tiny_model(MODEL, char_tok)
    base.save_pretrained(tmp_path / "base")
    model, _ = build_tiny_model(MODEL, char_tok)
    cfg = LoRAConfig(r=4)
    apply_lora(model, cfg)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_()
    save_adapter(model, cfg, tmp_path / "adapter", base_model=str(tmp_path / "base"))
    from peft import PeftModel

    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert torch.allclose(loaded(X).logits, model(X).logits, atol=1e-5)


def test_freeze_lower_layers(char_tok):
    model, _ = build_tiny_model(MODEL, char_tok)
    freeze_lower_layers(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.2.", "model.norm.")) for n in trainable)  # head tied: frozen
    with pytest.raises(ValueError, match="trainable_top"):
        freeze_lower_layers(model, 4)


TRAJS = [Trajectory(f"{a}+{b}", str(a + b), (Step(f"{a}+{b}={a + b}", label=(a + b) % 2 == 0),), meta={"mode": "history"})
         for a in range(4) for b in range(4)]


def test_pal_with_lora_writes_a_merged_checkpoint(char_tok, tmp_path):
    model, _ = build_tiny_model(MODEL, char_tok)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = PALConfig(output_dir=str(tmp_path / "pal"), mode="history", max_steps=5, batch_size=4, learning_rate=1e-2,
                    warmup_steps=0, progress=False)
    run = train_with_lora(train, cfg, LoRAConfig(r=4), model=model, tokenizer=char_tok, trajectories=TRAJS)
    assert run.trainable < run.total and (run.adapter / "adapter_model.safetensors").is_file()
    loaded, _, saved = load_model(run.checkpoint)
    assert saved.kind == "policy" and not (run.checkpoint / "optimizer.pt").exists()
    state = loaded.state_dict()
    assert set(state) == set(start)
    changed = {k for k in start if not torch.equal(start[k], state[k])}
    assert changed and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")) for k in changed)
    assert torch.allclose(loaded(X).logits, run.result.model(X).logits, atol=1e-5)
    with pytest.raises(ValueError, match="save_steps=0"):
        train_with_lora(train, PALConfig(output_dir=str(tmp_path / "x"), save_steps=2), LoRAConfig(), model=model,
                        tokenizer=char_tok, trajectories=TRAJS)


def test_prm_with_lora_trains_the_head_and_scores_from_the_checkpoint(char_tok, tmp_path):
    base, _ = build_tiny_model(MODEL, char_tok)
    save_model(base, char_tok, tmp_path / "base")
    prm = build_prm(tmp_path / "base", seed=0)
    head = prm.score.weight.clone()
    cfg = PRMConfig(output_dir=str(tmp_path / "prm"), max_steps=5, batch_size=4, learning_rate=1e-2, warmup_steps=0,
                    progress=False)
    run = train_with_lora(train_prm, cfg, LoRAConfig(r=4), model=prm, tokenizer=char_tok, trajectories=TRAJS)
    loaded, tok, saved = load_prm(run.checkpoint)
    assert saved.kind == "prm" and not torch.equal(loaded.score.weight, head)
    got, want = score(loaded, tok, TRAJS[:3]), score(run.result.model, char_tok, TRAJS[:3])
    assert sum(got, []) == pytest.approx(sum(want, []), abs=1e-5)
