"""What a saved model carries besides its weights: ``procsup.json``, its kind and step format.

A wrong separator silently moves every label boundary (the most common bug class of this field's tools),
so the step format a model was trained with is written next to its weights, once, by every save (policy,
PRM, action head), and read back by every loader; commands never re-ask for it.

``procsup.json``::

    {"kind": "policy" | "prm" | "action-head",
     "step_format": {"input_sep": "\\n", "step_sep": "\\n", "answer_prefix": "A:"},
     "mode": "history" | "state" | "outcome" | null,   # how a policy was trained; a PRM's row layout
     "procsup_version": "0.1.0",
     # written by the trainers' checkpoints, each optional (older files have none of them):
     "base_model": "./tiny",                            # what training started from (cfg.model), if a path
     "data": {"train_file": "data.jsonl", "sha256": "..."} | {"source": "in-memory"},
     "label_source": ["math-shepherd"],                 # the trajectories' meta "label_source" values
     "positions": "task-given",                         # trained with task-given position ids (absent: default ids)
     "metrics": {"step": 1000, "loss": 0.12, ...}}      # the last metrics line before the save

A PRM's classes are in its ``config.json`` (Hugging Face's ``id2label``: ``{0: "wrong", 1: "right"}`` for
a 2-class head, ``{0: "right"}`` for a 1-logit one). A checkpoint also holds a model card ``README.md``
(:func:`write_model_card`), generated from the same record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from procsup.data.io import write_json
from procsup.data.tokenize import StepFormat

FORMAT_FILE = "procsup.json"
KINDS = ("policy", "prm", "action-head")


def procsup_version() -> str:
    try:
        return version("procsup")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


@dataclass(frozen=True)
class SavedFormat:
    """The contents of ``procsup.json``."""

    kind: str
    """policy (a causal LM trained by PAL or outcome-only), prm (a token-classification PRM) or action-head."""
    step_format: StepFormat
    """The separators the model was trained with."""
    mode: str | None = None
    """A policy's training mode (history, state, outcome); a PRM's row layout (steps, or a state-mode view)."""
    procsup_version: str = ""
    base_model: str | None = None
    """The model training started from (a local folder or a cached hub id), when it was loaded by name."""
    data: dict | None = None
    """The training data: ``{"train_file", "sha256"}`` or ``{"source": "in-memory"}``."""
    label_source: tuple[str, ...] | None = None
    """Where the step labels came from, as the data's ``meta["label_source"]`` says (None: not said)."""
    metrics: dict | None = None
    """The last metrics line logged before the save."""
    positions: str | None = None
    """``"task-given"``: trained on rows with a task's position ids (``meta["positions"]``, docs/positions.md),
    so it must be decoded with the same rule (``load_policy(..., positions=rule)``); None: default ids."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "step_format": asdict(self.step_format), "mode": self.mode,
               "procsup_version": self.procsup_version or procsup_version()}
        extra = {"base_model": self.base_model, "data": self.data, "metrics": self.metrics, "positions": self.positions,
                 "label_source": list(self.label_source) if self.label_source is not None else None}
        return {**out, **{k: v for k, v in extra.items() if v is not None}}  # small: only what is known

    @classmethod
    def from_dict(cls, record: Any, where: str = FORMAT_FILE) -> "SavedFormat":
        if not isinstance(record, dict) or not isinstance(record.get("step_format"), dict):
            raise ValueError(f"{where}: not a procsup format file (needs 'kind' and a 'step_format' object)")
        known = {"input_sep", "step_sep", "answer_prefix"}
        fmt = record["step_format"]
        if set(fmt) - known or not all(isinstance(v, str) for v in fmt.values()):
            raise ValueError(f"{where}: field 'step_format' must hold only the strings {sorted(known)}, got {fmt!r}")
        if not isinstance(record.get("mode"), (str, type(None))):
            raise ValueError(f"{where}: field 'mode' must be a string or null, got {record['mode']!r}")
        for name, kind in (("base_model", str), ("data", dict), ("metrics", dict), ("label_source", list),
                           ("positions", str)):
            if not isinstance(record.get(name), (kind, type(None))):
                raise ValueError(f"{where}: field {name!r} must be a {kind.__name__} or absent, got {record[name]!r}")
        labels = record.get("label_source")
        try:
            return cls(kind=record.get("kind"), step_format=StepFormat(**fmt), mode=record.get("mode"),
                       procsup_version=str(record.get("procsup_version", "")), base_model=record.get("base_model"),
                       data=record.get("data"), metrics=record.get("metrics"), positions=record.get("positions"),
                       label_source=tuple(map(str, labels)) if labels is not None else None)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


def save_format(path: str | Path, kind: str, fmt: StepFormat, mode: str | None = None) -> Path:
    """Write ``procsup.json`` into the model directory ``path`` (atomically: a temporary file, then renamed)."""
    return write_format(path, SavedFormat(kind, fmt, mode))


def write_format(path: str | Path, saved: SavedFormat) -> Path:
    """Write ``saved`` as ``procsup.json`` into the model directory ``path`` (atomically)."""
    out = Path(path) / FORMAT_FILE
    return write_json(out, saved.to_dict())


_WHAT = {"policy": "a causal language model trained with process supervision (PAL) or outcome-only",
         "prm": "a process reward model: a token-classification head read at each step's last token",
         "action-head": "a causal language model backbone with an action-classification head"}


def model_card(saved: SavedFormat, config: Any = None) -> str:
    """A model card (``README.md``) for a checkpoint: what it is, its step format and mode, its data and
    final metrics, and how to load it. ``config``: the model's Hugging Face config (its classes)."""
    fmt = saved.step_format
    lines = ["---", "library_name: procsup", "tags: [procsup, process-supervision" + (", prm" if saved.kind == "prm" else "")
             + "]", "---", "", f"# procsup {saved.kind}", "", f"This folder holds {_WHAT[saved.kind]}, saved by procsup "
             f"{saved.procsup_version or procsup_version()}. Its `{FORMAT_FILE}` records everything below; loaders "
             "read it, so no command needs the separators again.", "",
             f"- **kind**: `{saved.kind}`", f"- **base model**: `{saved.base_model or 'passed in Python'}`",
             f"- **mode**: `{saved.mode}`",
             f"- **step format**: input_sep `{fmt.input_sep!r}`, step_sep `{fmt.step_sep!r}`, "
             f"answer_prefix `{fmt.answer_prefix!r}`"]
    labels = getattr(config, "id2label", None) if saved.kind == "prm" else None
    if labels:
        lines.append(f"- **classes** (`id2label`): {json.dumps({str(k): v for k, v in labels.items()})}"
                     + (" (one logit: sigmoid gives P(step is right))" if len(labels) == 1 else
                        " (softmax class 1 gives P(step is right))"))
    if saved.data:
        data = saved.data
        lines.append(f"- **data**: `{data['train_file']}` (sha256 `{data.get('sha256')}`)" if "train_file" in data
                     else "- **data**: trajectories passed in Python (in-memory)")
    if saved.label_source:
        lines.append(f"- **label source**: {', '.join(saved.label_source)}")
    if saved.metrics:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in saved.metrics.items())
        lines.append(f"- **metrics** (last logged line): {shown}")
    lines += ["", "## How to load", ""]
    if saved.kind == "prm":
        lines += ["```bash", "procsup score <this folder> trajectories.jsonl scored.jsonl", "```", "", "```python",
                  "from procsup.models.prm import load_prm, score", "model, tokenizer, saved = load_prm(\"<this folder>\")",
                  "scores = score(model, tokenizer, trajectories, saved.step_format)  # P(step is right), per step",
                  "```"]
    else:
        lines += ["```python", "from procsup.models.factory import load_model",
                  "model, tokenizer, saved = load_model(\"<this folder>\")  # saved.step_format, saved.mode", "```",
                  "", "It is also a plain Hugging Face folder (`AutoModelForCausalLM.from_pretrained`)."]
    return "\n".join(lines) + "\n"


def write_model_card(path: str | Path, saved: SavedFormat, config: Any = None) -> Path:
    """Write :func:`model_card` as ``README.md`` into the model directory ``path``."""
    out = Path(path) / "README.md"
    out.write_text(model_card(saved, config), encoding="utf-8")
    return out


def load_format(path: str | Path) -> SavedFormat | None:
    """``procsup.json`` of the model directory ``path``, or None if it has none (a model not saved by procsup)."""
    file = Path(path) / FORMAT_FILE
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    return SavedFormat.from_dict(record, where=str(file))


def check_kind(saved: SavedFormat | None, kind: str, path: str | Path) -> None:
    """Refuse the model directory ``path`` if its ``procsup.json`` records another kind than ``kind`` (a
    directory without one, e.g. a base model, passes: there is nothing to check it against)."""
    if saved is not None and saved.kind != kind:
        raise ValueError(f"{path} holds a {saved.kind!r} model, not a {kind!r} one ({Path(path) / FORMAT_FILE})")


def _agree(field: str, recorded: str, given: str, path: str | Path) -> None:
    if given != recorded:
        raise ValueError(f"{field} {given!r} disagrees with {Path(path) / FORMAT_FILE}, which records {recorded!r}")


def check_positions(saved: SavedFormat | None, path: str | Path, rule: object | None) -> None:
    """A model trained with task-given position ids (``saved.positions``) is decoded with a rule: default ids
    would give silently wrong outputs, so loading it without one is an error naming the folder."""
    if saved is not None and saved.positions is not None and rule is None:
        raise ValueError(f"{path}: trained with {saved.positions} position ids ({FORMAT_FILE} 'positions'); decode it with "
                         "the task's rule, positions= (e.g. AdditionTask.coupled_positions(...), docs/positions.md)")


def resolve_format(saved: SavedFormat | None, path: str | Path, *, input_sep: str | None = None,
                   step_sep: str | None = None, answer_prefix: str | None = None) -> StepFormat:
    """The step format to use with the model in ``path``: the recorded one. A given value must agree with it
    (a different separator would move every step boundary, silently); without a record, the given values
    over the :class:`StepFormat` defaults."""
    given = {"input_sep": input_sep, "step_sep": step_sep, "answer_prefix": answer_prefix}
    given = {name: value for name, value in given.items() if value is not None}
    if saved is None:
        return StepFormat(**given)
    recorded = asdict(saved.step_format)
    for name, value in given.items():
        _agree(name, recorded[name], value, path)
    return saved.step_format


def resolve_mode(saved: SavedFormat | None, path: str | Path, mode: str | None, default: str) -> str:
    """The mode to use with the model in ``path``: the recorded one (a given ``mode`` must agree with it);
    without a record, ``mode`` or else ``default``."""
    if saved is None or saved.mode is None:
        return mode or default
    if mode is not None:
        _agree("mode", saved.mode, mode, path)
    return saved.mode
