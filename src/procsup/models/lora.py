"""Parameter-efficient training: LoRA adapters (``peft``) or frozen lower layers, on any local HF model.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") adds ``W + (alpha/r) B A`` beside
chosen linear layers and trains only ``A`` and ``B``. The adapters are injected *in place*
(``peft.inject_adapter_in_model``): the model keeps its Hugging Face class, so every procsup trainer, the PRM's
sparse last block (``models/positions.py``) and the checkpoints take it unchanged. Only the adapters (and the
modules named in ``modules_to_save``, e.g. a PRM's new head ``score``) keep ``requires_grad``.

The trainers take it as an option group (``lora.r=8`` in a PAL or PRM config: :class:`LoRAConfig` is the
``lora`` field of :class:`~procsup.trainers.options.CheckpointOptions`, applied by
:func:`procsup.trainers.loop.prepare_model`). A model with injected adapters would save keys
(``q_proj.base_layer.weight``, ``lora_A``) that a plain model silently ignores, so :func:`apply_lora` also
registers a state-dict hook: the model's ``state_dict()`` holds the *merged* weights (``W + (alpha/r) B A``)
under the plain keys, and every checkpoint a trainer writes is an ordinary model folder. The adapters alone
are not in it; :func:`save_adapter` writes them in PEFT's layout, :func:`merge_lora` folds them in place.
Needs ``pip install 'procsup[real]'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class LoRAConfig:
    """Which layers get LoRA adapters, and their size (Hu et al., 2021). ``r = 0``: no adapters (the default of
    the trainers' ``lora`` group: the whole model trains)."""

    r: int = 0
    """Rank of each adapter; 0: LoRA off."""
    alpha: float = 16.0
    """Scale: the update is (alpha / r) B A."""
    dropout: float = 0.0
    """Dropout on the adapters' input (0: runs are reproducible)."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Names of the linear layers that get an adapter (llama-style attention by default; add ``gate_proj``,
    ``up_proj``, ``down_proj`` for the MLP)."""
    layers: tuple[int, ...] = ()
    """Indices of the transformer blocks whose target modules get adapters (empty: every block). Adapting only
    the top blocks also skips the backward pass below the lowest adapted one (faster on CPU)."""
    modules_to_save: tuple[str, ...] = ("score",)
    """Modules trained in full beside the adapters: a PRM's new head (``score``); absent names are skipped."""

    def __post_init__(self) -> None:
        if self.r < 0:
            raise ValueError(f"lora.r must be >= 0 (0: off), got {self.r}")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("lora.target_modules must name at least one linear layer")
        if any(i < 0 for i in self.layers):
            raise ValueError(f"lora.layers must be block indices >= 0, got {self.layers}")

    @property
    def enabled(self) -> bool:
        return self.r > 0

    def peft_config(self):
        try:
            from peft import LoraConfig
        except ImportError:
            raise ImportError("LoRA needs the peft package: pip install 'procsup[real]'") from None
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), bias="none",
                          layers_to_transform=list(self.layers) or None)


def _is_saved(name: str, cfg: LoRAConfig) -> bool:
    return any(name == m or name.startswith(m + ".") for m in cfg.modules_to_save)


def apply_lora(model: nn.Module, cfg: LoRAConfig, seed: int | None = 0) -> nn.Module:
    """Inject LoRA adapters into ``model`` in place (``B`` starts at zero, so the model's outputs are unchanged)
    and freeze every other parameter but those of ``cfg.modules_to_save``. ``A`` is drawn from ``seed``
    without touching the caller's random state (None: torch's global generator). From now on
    ``model.state_dict()`` holds the merged weights under the plain model's keys (:func:`merged_state_dict`),
    so ``save_pretrained`` writes an ordinary model. Returns ``model``."""
    if not cfg.enabled:
        raise ValueError("apply_lora needs lora.r >= 1 (r = 0 means no adapters)")
    from peft import inject_adapter_in_model

    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        inject_adapter_in_model(cfg.peft_config(), model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or _is_saved(name, cfg))
    model.register_state_dict_post_hook(merged_state_dict)
    model.procsup_lora = cfg  # what has_lora and the checkpoints read
    return model


def has_lora(model: nn.Module) -> bool:
    """Whether :func:`apply_lora` injected adapters into ``model`` (and :func:`merge_lora` has not folded them)."""
    return getattr(model, "procsup_lora", None) is not None


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (the adapters and ``modules_to_save``) under their names in the adapted model:
    what a LoRA run's checkpoint needs besides its merged weights to resume (the frozen base is the run's
    starting model)."""
    return {name: p.detach().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load :func:`trainable_state` back into an adapted model, in place; names must match exactly."""
    own = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(own) != set(state):
        raise ValueError(f"{where}: the adapters do not fit this model (missing {sorted(set(own) - set(state))[:4]}, "
                         f"unexpected {sorted(set(state) - set(own))[:4]}); resume with the run's lora settings")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(state[name])


def merged_state_dict(module: nn.Module, state: dict, prefix: str, local_metadata) -> None:
    """State-dict hook of a model with adapters (registered by :func:`apply_lora`): each LoRA layer's
    ``base_layer.weight`` becomes ``weight + (alpha/r) B A`` under the plain key (``q_proj.weight``), its bias
    ``q_proj.bias``, and its ``lora_*`` entries go. The model itself is not changed. A module, not a closure,
    is read, so a deep copy of the model keeps a working hook."""
    from peft.tuners.lora import LoraLayer

    for name, layer in module.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        at = f"{prefix}{name}."
        base = state.pop(f"{at}base_layer.weight")
        with torch.no_grad():
            delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A)
        state[f"{at}weight"] = (base + delta).to(base.dtype)
        if f"{at}base_layer.bias" in state:
            state[f"{at}bias"] = state.pop(f"{at}base_layer.bias")
        for key in [k for k in state if k.startswith(f"{at}lora_")]:
            del state[key]


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
    model.procsup_lora = None
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
    raw = dict(model.named_parameters())  # not state_dict(): its hook (apply_lora) folds the adapters away
    state = {f"base_model.model.{k}": v for k, v in get_peft_model_state_dict(model, state_dict=raw).items()}
    state.update({f"base_model.model.{k}": v for k, v in raw.items() if _is_saved(k, cfg)})
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path / "adapter_model.safetensors"))
    peft_cfg = cfg.peft_config()
    peft_cfg.base_model_name_or_path = base_model
    peft_cfg.modules_to_save = [m for m in cfg.modules_to_save if any(_is_saved(k, cfg) for k in raw)] or None
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
