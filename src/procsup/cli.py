"""The ``procsup`` command. Every subcommand builds a config dataclass (from ``--config FILE.yaml``
and ``key=value`` overrides) and calls the same ``main``/``train`` function the Python API exposes."""

from __future__ import annotations

import importlib
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand

from procsup.config import build_config, config_help

app = typer.Typer(help="procsup: process supervision for Hugging Face models.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
bench_app = typer.Typer(help="Benchmarks that reproduce published claims.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file of config fields (overrides win).")
OverridesArg = typer.Argument(None, help="key=value config fields; see the list below.", show_default=False)


def _build(cls, config: Optional[Path], overrides: Optional[list[str]]):
    try:
        return build_config(cls, config, overrides)
    except (ValueError, TypeError, FileNotFoundError) as e:
        typer.echo(f"procsup: bad configuration: {e}", err=True)
        raise typer.Exit(2) from None


def _epilog(cls) -> str:
    return "Config fields:\n\n" + "\n\n".join(config_help(cls).splitlines())


@contextmanager
def _bad_input(*kinds: type[BaseException]):
    """Turn the errors bad input raises (they name file, line and field) into one line and exit code 1."""
    try:
        yield
    except kinds as e:
        typer.echo(f"procsup: {e}", err=True)
        raise typer.Exit(1) from None


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _help_with_fields(config: str) -> type[TyperCommand]:
    """A command class whose ``--help`` ends with the fields of the config class ``config``
    (``"module:Class"``), imported only when that help is shown: the trainer and benchmark modules import
    torch and transformers, which ``procsup --help`` and the light commands should not wait for (click's
    lazy loading of subcommands, applied to the one thing the help needs)."""

    class ConfigCommand(TyperCommand):
        def format_help(self, ctx, formatter):
            module, _, name = config.partition(":")
            self.epilog = _epilog(getattr(importlib.import_module(module), name))
            return super().format_help(ctx, formatter)

    return ConfigCommand


@app.command(cls=_help_with_fields("procsup.trainers.pal:PALConfig"))
def train(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Train a local Hugging Face causal LM with PAL (mode=history|state) or outcome-only (mode=outcome).

    Example: procsup train model=./tiny train_file=data.jsonl output_dir=runs/pal mode=history lam=1.0
    Several processes: accelerate launch --num_processes 2 -m procsup.cli train ...
    """
    from procsup.data.trajectory import TrajectoryError
    from procsup.trainers.pal import PALConfig
    from procsup.trainers.pal import train as run

    _setup_logging()
    cfg = _build(PALConfig, config, overrides)
    with _bad_input(TrajectoryError, FileNotFoundError, ValueError):
        result = run(cfg)
    typer.echo(f"trained {result.steps} steps in {result.seconds:.1f}s; final metrics: {result.final_metrics}")
    typer.echo(f"checkpoint: {Path(cfg.output_dir) / f'checkpoint-{cfg.max_steps}'}")


@app.command("train-prm", cls=_help_with_fields("procsup.trainers.prm:PRMConfig"))
def train_prm(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Train a process reward model on trajectories with step labels (hard: soft=false; soft: soft=true).

    Example: procsup train-prm model=./tiny train_file=labelled.jsonl output_dir=runs/prm
    """
    from procsup.data.trajectory import TrajectoryError
    from procsup.trainers.prm import PRMConfig
    from procsup.trainers.prm import train_prm as run

    _setup_logging()
    cfg = _build(PRMConfig, config, overrides)
    with _bad_input(TrajectoryError, FileNotFoundError, ValueError):
        result = run(cfg)
    typer.echo(f"trained {result.steps} steps in {result.seconds:.1f}s; final metrics: {result.final_metrics}")


@app.command()
def score(
    model: Path = typer.Argument(..., help="A PRM checkpoint directory (procsup train-prm)."),
    data: Path = typer.Argument(..., help="JSONL of trajectories to score (labels, if any, are ignored)."),
    out: Path = typer.Argument(..., help="Output JSONL: the trajectories with meta['step_scores'] (written atomically)."),
    step_sep: Optional[str] = typer.Option(
        None, help="Only for a PRM saved without procsup.json: its step separator (\\n, \\t, \\\\ decoded). "
        "Otherwise the saved one is used, and a different value is an error."),
    input_sep: Optional[str] = typer.Option(None, help="Like --step-sep, for the input separator."),
    batch_size: int = typer.Option(32),
) -> None:
    """Score every step of every trajectory with a PRM, all steps of a trajectory in one forward pass, in the
    step format the PRM was saved with (its procsup.json)."""
    from dataclasses import replace

    from procsup.data.io import read_jsonl, write_jsonl
    from procsup.data.trajectory import TrajectoryError
    from procsup.models.prm import load_prm
    from procsup.models.prm import score as run
    from procsup.models.saved import FORMAT_FILE, check_kind, load_format, resolve_format, unescape

    with _bad_input(TrajectoryError, OSError, ValueError):
        saved = load_format(model)  # checked before the weights load: a wrong folder or flag fails at once
        check_kind(saved, "prm", model)
        fmt = resolve_format(saved, model, step_sep=step_sep and unescape(step_sep, "--step-sep"),
                             input_sep=input_sep and unescape(input_sep, "--input-sep"))
        trajs = read_jsonl(data)
        prm, tok, _ = load_prm(model)
    if saved is None:
        typer.echo(f"procsup: warning: {model} has no {FORMAT_FILE}, its step format was not recorded; using {fmt}",
                   err=True)
    scores = run(prm, tok, trajs, fmt, batch_size=batch_size)
    write_jsonl([replace(t, meta={**t.meta, "step_scores": s}) for t, s in zip(trajs, scores)], out)
    typer.echo(f"scored {len(trajs)} trajectories into {out}")


@app.command("init-model")
def init_model(
    path: Path = typer.Argument(..., help="Directory to write the model to."),
    arch: str = typer.Option("llama", help="llama, qwen2 or gpt2."),
    hidden_size: int = typer.Option(128), num_layers: int = typer.Option(2), num_heads: int = typer.Option(4),
    seed: int = typer.Option(0),
) -> None:
    """Write a tiny randomly initialised causal LM with a character tokenizer (safetensors), for trying procsup.

    No procsup.json is written: a base model has no step format until a trainer saves one with it."""
    from procsup.models.factory import TinyModelConfig, build_tiny_model, save_model

    model, tok = build_tiny_model(TinyModelConfig(arch, hidden_size, num_layers, num_heads), seed=seed)
    save_model(model, tok, path)
    typer.echo(f"wrote {arch} model ({sum(p.numel() for p in model.parameters()):,} parameters) to {path}")


@app.command()
def validate(
    path: Path = typer.Argument(..., help="JSONL of trajectories."),
    rejects: Optional[Path] = typer.Option(None, help="Write bad records here with their reason instead of stopping."),
) -> None:
    """Check a trajectory file; the first error names file, line and field."""
    from procsup.data.io import read_jsonl
    from procsup.data.trajectory import TrajectoryError

    with _bad_input(TrajectoryError, FileNotFoundError):
        trajs = read_jsonl(path, rejects=rejects)
    labelled = sum(t.has_labels for t in trajs)
    typer.echo(f"{path}: {len(trajs)} valid trajectories, {sum(len(t.steps) for t in trajs)} steps, {labelled} fully labelled")


@app.command()
def convert(
    src: Path = typer.Argument(..., help="Input JSONL."),
    dst: Path = typer.Argument(..., help="Output JSONL (written atomically)."),
    to: str = typer.Option(..., "--to", help="'stepwise' (TRL prompt/completions/labels) or 'procsup'."),
    rejects: Optional[Path] = typer.Option(None, help="Reject file for bad records."),
) -> None:
    """Convert between procsup trajectories and TRL's stepwise-supervision format."""
    from procsup.data.convert import read_stepwise_jsonl, write_stepwise_jsonl
    from procsup.data.io import read_jsonl, write_jsonl
    from procsup.data.trajectory import TrajectoryError

    if to not in ("stepwise", "procsup"):
        raise typer.BadParameter("--to must be 'stepwise' or 'procsup'")
    with _bad_input(TrajectoryError, FileNotFoundError):
        if to == "stepwise":
            write_stepwise_jsonl(read_jsonl(src, rejects=rejects), dst)
        else:
            write_jsonl(read_stepwise_jsonl(src, rejects=rejects), dst)
    typer.echo(f"wrote {dst}")


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
    from procsup.models.saved import FORMAT_FILE, check_kind, load_format, resolve_format, resolve_mode
    from procsup.rollout import LMPolicy
    from procsup.tasks.addition import AdditionTask
    from procsup.tasks.grid import GridTask
    from procsup.tasks.logic import LogicTask
    from procsup.tasks.word_problems import WordProblemTask

    tasks = {"addition": AdditionTask, "grid": GridTask, "logic": LogicTask, "word_problems": WordProblemTask}
    if task not in tasks:
        raise typer.BadParameter(f"task must be one of {sorted(tasks)}")
    if mode is not None and mode not in MODES:
        raise typer.BadParameter(f"mode must be one of {MODES}")
    with _bad_input(FileNotFoundError, OSError, ValueError):
        saved = load_format(model)  # checked before the weights load: a wrong folder or mode fails at once
        check_kind(saved, "policy", model)  # a PRM, or an action head (its backbone alone is not the policy)
        mode = resolve_mode(saved, model, mode, default="state")
        fmt = resolve_format(saved, model)
        lm, tok, _ = load_model(model)
    if saved is None:
        typer.echo(f"procsup: warning: {model} has no {FORMAT_FILE}, its step format and mode were not recorded; "
                   f"using {fmt} and mode {mode!r}", err=True)
    t = tasks[task]()
    metrics = run(LMPolicy(lm, tok, t, fmt, mode), t.sample(seed, size, count))
    typer.echo(json.dumps({"task": task, "size": size, "mode": mode, **metrics}))


@bench_app.command("addition", cls=_help_with_fields("procsup.bench.addition:AdditionBenchConfig"))
def bench_addition(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Outcome-only vs PAL-history vs PAL-state on n-digit addition: train on 1-3 digits, test on 3/5/10/20.

    Example (quick): procsup bench addition seeds=0 steps=300 test_size=100
    """
    from rich.console import Console
    from rich.table import Table

    from procsup.bench.addition import AdditionBenchConfig, main

    cfg = _build(AdditionBenchConfig, config, overrides)
    result = main(cfg)
    header, *rows = result["rows"]
    table = Table(title=f"Addition exact match (%), mean ± std over seeds {list(cfg.seeds)}")
    for h in header:
        table.add_column(h, justify="right")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    typer.echo(f"wall time {result['wall_seconds']:.0f}s; wrote {cfg.output_dir}/results.json and accuracy.png")


@bench_app.command("paper", cls=_help_with_fields("procsup.bench.paper:PaperBenchConfig"))
def bench_paper(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """The synthetic rows of the PAL paper's Table 1 with our tasks (addition, grid, logic, word problems,
    consistency ablation), our figures beside the paper's, mean ± std over seeds.

    Example: procsup bench paper quick=true grid.steps=100
    """
    from procsup.bench.paper import PaperBenchConfig, main

    main(_build(PaperBenchConfig, config, overrides))


@bench_app.command("prm", cls=_help_with_fields("procsup.bench.prm:PRMBenchConfig"))
def bench_prm(config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Best-of-N with a PRM (each aggregation) vs an ORM vs majority vote, step AUROC against oracle
    labels, and PRM beam search at equal policy samples, on addition with a weak policy.

    Example: procsup bench prm seeds=0 test_size=100
    """
    from procsup.bench.prm import PRMBenchConfig, main

    main(_build(PRMBenchConfig, config, overrides))


if __name__ == "__main__":
    app()
