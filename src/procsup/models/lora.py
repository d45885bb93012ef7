"""Parameter-efficient training: LoRA adapters (``peft``) or frozen lower layers, on any local HF model.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") adds ``W + (alpha/r) B A`` beside
chosen linear layers and trains only ``A`` and ``B``. The adapters are injected *in place*
(``peft.inject_adapter_in_model``): the model keeps its Hugging Face class, so every procsup trainer, the PRM's
sparse last block (``models/positions.py``) and the checkpoints take it unchanged. Only the adapters (and the
modules named in ``modules_to_save``, e.g. a PRM's new head ``score``) keep ``requires_grad``.

A model with adapters saves keys (``q_proj.base_layer.weight``, ``lora_A``) that a plain model does not
load, so a trained model is merged back (:func:`merge_lora`: ``W += (alpha/r) B A``, the LoRA layers replaced
by their base layers) before it is saved as a normal folder; :func:`save_adapter` writes the adapters apart
(``adapter_model.safetensors`` + ``adapter_config.json``, PEFT's layout). :func:`train_with_lora` does both
around a trainer's ``train`` function. Needs ``pip install 'procsup[real]'``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class LoRAConfig:
    """Which layers get adapters, and their size."""

    r: int = 8
    """Rank of each adapter."""
    alpha: float = 16.0
    """Scale: the update is (alpha / r) B A."""
    dropout: float = 0.0
    """Dropout on the adapters' input (0: runs are reproducible)."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Names of the linear layers that get an adapter (llama-style attention by default; add ``gate_proj``,
    ``up_proj``, ``down_proj`` for the MLP)."""
    modules_to_save: tuple[str, ...] = ("score",)
    """Modules trained in full beside the adapters: a PRM's new head (``score``); absent names are skipped."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one linear layer")

    def peft_config(self):
        try:
            from peft import LoraConfig
        except ImportError:
            raise ImportError("LoRA needs the peft package: pip install 'procsup[real]'") from None
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), bias="none")


def _is_saved(name: str, cfg: LoRAConfig) -> bool:
    return any(name == m or name.startswith(m + ".") for m in cfg.modules_to_save)


def apply_lora(model: nn.Module, cfg: LoRAConfig, seed: int | None = 0) -> nn.Module:
    """Inject LoRA adapters into ``model`` in place (``B`` starts at zero, so the model's outputs are unchanged)
    and freeze every other parameter but those of ``cfg.modules_to_save``. ``A`` is drawn from ``seed``
    without touching the caller's random state (None: torch's global generator). Returns ``model``."""
    from peft import inject_adapter_in_model

    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        inject_adapter_in_model(cfg.peft_config(), model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or _is_saved(name, cfg))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the base layer back in its place: a plain model with
    the keys of the one LoRA was applied to. In place; returns ``model``."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save_adapter(model: nn.Module, cfg: LoRAConfig, path: str | Path, base_model: str | None = None) -> Path:
    """Write the adapters of ``model`` (before :func:`merge_lora`) and the ``modules_to_save`` weights to
    ``path/adapter_model.safetensors`` with ``adapter_config.json``, the layout ``peft.PeftModel.from_pretrained``
    reads on top of the base model."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # keys as a PeftModel names them (it wraps the model as base_model.model); an injected model's lack the prefix
    state = {f"base_model.model.{k}": v for k, v in get_peft_model_state_dict(model).items()}
    state.update({f"base_model.model.{k}": v for k, v in model.state_dict().items() if _is_saved(k, cfg)})
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path / "adapter_model.safetensors"))
    peft_cfg = cfg.peft_config()
    peft_cfg.base_model_name_or_path = base_model
    peft_cfg.modules_to_save = [m for m in cfg.modules_to_save if any(_is_saved(k, cfg) for k in model.state_dict())] or None
    peft_cfg.save_pretrained(str(path))
    return path


def freeze_lower_layers(model: nn.Module, trainable_top: int) -> nn.Module:
    """Train only the top ``trainable_top`` transformer blocks, the final norm and the head(s): the embeddings
    and every lower block are frozen (their backward pass is skipped entirely). With tied embeddings
    (SmolLM2) the LM head is the frozen embedding matrix; a PRM's ``score`` head stays trainable."""
    backbone = getattr(model, model.base_model_prefix)
    layers = backbone.layers
    if not 0 <= trainable_top <= len(layers):
        raise ValueError(f"trainable_top must be in [0, {len(layers)}], got {trainable_top}")
    for p in model.parameters():
        p.requires_grad_(False)
    keep = [*layers[len(layers) - trainable_top:], backbone.norm]
    keep += [m for n, m in model.named_children() if n != model.base_model_prefix]  # lm_head / score
    for module in keep:
        for p in module.parameters():
            p.requires_grad_(True)
    if getattr(model.config, "tie_word_embeddings", False):  # a tied head shares the (frozen) embeddings
        backbone.embed_tokens.weight.requires_grad_(False)
    return model


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))


@dataclass
class LoRARun:
    """What :func:`train_with_lora` returns: the trainer's result, where the merged model and adapters went."""

    result: object
    checkpoint: Path
    adapter: Path
    trainable: int = 0
    total: int = 0
    notes: list[str] = field(default_factory=list)


def train_with_lora(train: Callable, cfg, lora: LoRAConfig, *, model: nn.Module, tokenizer,
                    trajectories=None, base_model: str | None = None) -> LoRARun:
    """Run a procsup trainer (``procsup.trainers.pal.train`` or ``procsup.trainers.prm.train_prm``) with LoRA:
    adapters injected into ``model``, the trainer run on it, then its final checkpoint rewritten with the
    merged weights (so ``procsup score``/``evaluate`` and every loader read it like any other checkpoint) and
    the adapters saved apart in ``checkpoint-N/adapter``. ``cfg.save_steps`` and ``cfg.resume`` are refused:
    an intermediate checkpoint would hold unmerged adapter keys that a plain loader does not read."""
    if cfg.save_steps or cfg.resume:
        raise ValueError("train_with_lora keeps one final, merged checkpoint: set save_steps=0 and resume=false")
    apply_lora(model, lora, seed=cfg.seed)
    trainable, total = trainable_parameters(model)
    result = train(cfg, model=model, tokenizer=tokenizer, trajectories=trajectories)
    ckpt = Path(cfg.output_dir) / f"checkpoint-{cfg.max_steps}"
    trained = result.model
    adapter = save_adapter(trained, lora, ckpt / "adapter", base_model=base_model)
    merge_lora(trained)
    tmp = ckpt / ".merged"
    trained.save_pretrained(tmp, safe_serialization=True)
    for f in tmp.iterdir():  # config.json and model.safetensors, replacing the unmerged ones
        f.replace(ckpt / f.name)
    shutil.rmtree(tmp)
    (ckpt / "optimizer.pt").unlink(missing_ok=True)  # the adapters' optimizer state: no resume from here
    state = ckpt / "trainer_state.json"
    if state.is_file():
        record = json.loads(state.read_text())
        record["lora"] = {"r": lora.r, "alpha": lora.alpha, "target_modules": list(lora.target_modules),
                          "trainable_parameters": trainable, "total_parameters": total, "merged": True}
        state.write_text(json.dumps(record, indent=1))
    return LoRARun(result, ckpt, adapter, trainable, total)
