"""The procsup command: --key value overrides, fast help in CLI syntax (no torch), --version, make-data,
convert --from/--map, path checks, score's early errors and evaluate-prm on scored data."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from procsup.cli import app, cli_text, cli_value, normalize_overrides, static_fields
from procsup.data.io import read_jsonl, write_jsonl
from procsup.trainers.pal import PALConfig

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "converters"
CONFIGS = ["procsup.trainers.pal:PALConfig", "procsup.trainers.prm:PRMConfig",
           "procsup.bench.addition:AdditionBenchConfig", "procsup.bench.paper:PaperBenchConfig",
           "procsup.bench.prm:PRMBenchConfig"]


def test_key_value_flags_become_overrides():
    args = ["--model", "x", "--learning_rate", "1e-4", "--max-steps=5", "mode=state", "--progress", "--resume", "false",
            "--no-progress"]
    assert normalize_overrides(PALConfig, args) == [
        "model=x", "learning_rate=1e-4", "max_steps=5", "mode=state", "progress=true", "resume=false", "progress=false"]
    assert normalize_overrides(PALConfig, ["--lam", "-1"]) == ["lam=-1"]  # a negative number is a value
    with pytest.raises(ValueError, match="--model needs a value"):
        normalize_overrides(PALConfig, ["--model"])


def test_double_dash_overrides_reach_the_config(tmp_path):
    out = runner.invoke(app, ["train", "--output_dir", str(tmp_path / "x"), "--lam", "-1"])
    assert out.exit_code == 2 and "lam" in out.output
    out = runner.invoke(app, ["train", "--output-dir", str(tmp_path / "x"), "--no-such-field", "1"])
    assert out.exit_code == 2 and "no_such_field" in out.output


@pytest.mark.parametrize("spec", CONFIGS)
def test_help_fields_read_from_source_match_the_classes(spec):
    """The help reads fields from the source (no import of torch): same names and defaults as the classes."""
    module, _, name = spec.partition(":")
    cls = getattr(importlib.import_module(module), name)

    def dynamic(klass, prefix=""):
        out = {}
        hints = __import__("typing").get_type_hints(klass)
        for f in dataclasses.fields(klass):
            if dataclasses.is_dataclass(hints[f.name]):
                out.update(dynamic(hints[f.name], f"{prefix}{f.name}."))
            elif f.default is not dataclasses.MISSING:
                out[prefix + f.name] = cli_value(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                out[prefix + f.name] = cli_value(f.default_factory())
            else:
                out[prefix + f.name] = None
        return out

    static = {n: (None if d is dataclasses.MISSING else cli_value(d)) for n, d, _ in static_fields(module, name)}
    assert static == dynamic(cls)


def test_help_is_fast_and_does_not_import_torch():
    code = ("import sys\nfrom procsup.cli import app\nfor argv in (['--help'], ['train', '--help'], "
            "['train-prm', '--help'], ['bench', 'paper', '--help']):\n"
            "    try:\n        app(argv)\n    except SystemExit:\n        pass\n"
            "print('TORCH' if 'torch' in sys.modules or 'transformers' in sys.modules else 'LIGHT')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("LIGHT"), out.stdout[-500:] + out.stderr[-500:]


def test_help_is_in_cli_syntax():
    text = runner.invoke(app, ["bench", "paper", "--help"], terminal_width=200).output
    assert "seeds=0,1,2" in text and "(" + "'" not in text and ":func:" not in text and "``" not in text
    text = runner.invoke(app, ["train", "--help"], terminal_width=200).output
    assert "step_sep=\\n" in text or "step_format" in text
    assert cli_text("see :func:`~procsup.x.train` and ``a=b``") == "see train and a=b"
    assert cli_value(("a", "b")) == "a,b" and cli_value("\n") == "\\n" and cli_value(None) == "none"


def test_version():
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and out.output.startswith("procsup ")


@pytest.mark.parametrize("task", ["addition", "grid", "logic", "word_problems"])
@pytest.mark.parametrize("mode", ["history", "state"])
def test_make_data_writes_valid_trajectories(tmp_path, task, mode):
    out = tmp_path / "sub" / "d.jsonl"
    res = runner.invoke(app, ["make-data", task, "--mode", mode, "--count", "6", "--size", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    trajs = read_jsonl(out)
    assert len(trajs) == 6 and all(s.label is None for t in trajs for s in t.steps)
    if mode == "state":
        assert all(s.state is not None for t in trajs for s in t.steps)


@pytest.mark.parametrize("mode", ["history", "state"])
def test_make_data_labels(tmp_path, mode):
    out = tmp_path / "d.jsonl"
    res = runner.invoke(app, ["make-data", "addition", "--mode", mode, "--labels", "exact", "--count", "5", "-o", str(out)])
    assert res.exit_code == 0 and all(s.label is True for t in read_jsonl(out) for s in t.steps)
    res = runner.invoke(app, ["make-data", "addition", "--mode", mode, "--labels", "corrupt", "--corrupt-rate", "0.5",
                              "--count", "20", "--seed", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    trajs = read_jsonl(out)
    labels = [s.label for t in trajs for s in t.steps]
    assert True in labels and False in labels  # PRM data: both labels
    for t in trajs:  # a step no corruption touched is right
        assert all(s.label for i, s in enumerate(t.steps) if i not in t.meta["corrupted"])


def test_make_data_errors(tmp_path):
    res = runner.invoke(app, ["make-data", "chess", "-o", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "task must be one of" in res.output
    res = runner.invoke(app, ["make-data", "addition", "--size", "3-1", "-o", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "--size" in res.output
    res = runner.invoke(app, ["make-data", "addition", "-o", str(tmp_path)])
    assert res.exit_code == 1 and "folder" in res.output


@pytest.mark.parametrize("source,fixture", [
    ("math-shepherd", "math_shepherd.jsonl"), ("processbench", "processbench_gsm8k.json"), ("prm800k", "prm800k.jsonl"),
    ("prmbench", "prmbench.jsonl"), ("mr-ben", "mr_ben_physics.json"), ("gsm8k", "gsm8k_train.jsonl"),
    ("agentprocessbench", "agentprocessbench_hotpotqa.jsonl")])
def test_convert_from_every_source(tmp_path, source, fixture):
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["convert", "--from", source, str(FIXTURES / fixture), str(out)])
    assert res.exit_code == 0, res.output
    assert read_jsonl(out) and f"to {out}" in res.output
    res = runner.invoke(app, ["convert", "--from", source, str(FIXTURES / fixture), str(tmp_path / "s.jsonl"),
                              "--to", "stepwise"])
    assert res.exit_code == 0, res.output


def test_convert_with_a_field_map(tmp_path):
    src = tmp_path / "mine.jsonl"
    rows = [{"problem": "1+1", "steps": ["a", "b", "c"], "label": 1, "final": 2},
            {"problem": "2+2", "steps": ["d", "e"], "label": -1, "final": "4"},
            {"problem": "bad", "steps": ["f"], "label": 5, "final": "x"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    spec = "question=problem,steps=steps,first_error=label,answer=final"
    res = runner.invoke(app, ["convert", str(src), str(out), "--map", spec, "--rejects", str(rejects)])
    assert res.exit_code == 0, res.output
    trajs = read_jsonl(out)
    assert [t.labels for t in trajs] == [[True, False], [True, True]]
    assert trajs[0].target == "2" and trajs[0].meta["first_error"] == 1
    assert "label" in rejects.read_text()
    res = runner.invoke(app, ["convert", str(src), str(out), "--map", "question=problem,steps=steps,labels=lab"])
    assert res.exit_code == 1 and "lab" in res.output
    res = runner.invoke(app, ["convert", str(src), str(out), "--map", "steps=steps"])
    assert res.exit_code == 1 and "question" in res.output


def test_convert_refuses_same_files_and_missing_mode(tmp_path):
    src = FIXTURES / "math_shepherd.jsonl"
    res = runner.invoke(app, ["convert", "--from", "math-shepherd", str(src), str(src)])
    assert res.exit_code == 1 and "same file" in res.output
    out = tmp_path / "o.jsonl"
    res = runner.invoke(app, ["convert", "--from", "math-shepherd", str(src), str(out), "--rejects", str(out)])
    assert res.exit_code == 1 and "same file" in res.output
    res = runner.invoke(app, ["convert", "--from", "math-shepherd", str(tmp_path / "missing.jsonl"), str(out)])
    assert res.exit_code == 1 and "no such file" in res.output
    res = runner.invoke(app, ["convert", str(src), str(out)])
    assert res.exit_code == 2 and "--from" in res.output
    res = runner.invoke(app, ["convert", "--from", "nope", str(src), str(out)])
    assert res.exit_code == 2 and "math-shepherd" in res.output


def test_score_fails_before_any_work(tmp_path):
    data = tmp_path / "d.jsonl"
    runner.invoke(app, ["make-data", "addition", "--count", "2", "-o", str(data)])
    res = runner.invoke(app, ["score", str(tmp_path / "prm"), str(data), str(tmp_path / "o.jsonl"), "--batch-size", "0"])
    assert res.exit_code == 2 and "--batch-size must be >= 1" in res.output
    res = runner.invoke(app, ["score", str(tmp_path / "prm"), str(data), str(data)])
    assert res.exit_code == 1 and "same file" in res.output
    res = runner.invoke(app, ["score", str(tmp_path / "prm"), str(data), str(tmp_path)])
    assert res.exit_code == 1 and "folder" in res.output


def test_evaluate_prm_on_scored_data(tmp_path):
    """Scores that follow the labels give F1 1 and AUROC 1; the trivial rows stand beside them."""
    data = tmp_path / "d.jsonl"
    runner.invoke(app, ["make-data", "addition", "--labels", "corrupt", "--corrupt-rate", "0.3", "--count", "60",
                        "-o", str(data)])
    trajs = read_jsonl(data)
    scored = tmp_path / "scored.jsonl"
    write_jsonl([dataclasses.replace(t, meta={**t.meta, "step_scores": [0.9 if s.label else 0.1 for s in t.steps]})
                 for t in trajs], scored)
    res = runner.invoke(app, ["evaluate-prm", str(scored), "--json", str(tmp_path / "r.json"), "--draws", "20"])
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["processbench"]["prm"]["f1"] == 1.0 and report["steps"]["prm"]["auroc"] == 1.0
    assert report["processbench"]["random_scores"]["f1"]["mean"] < 1.0
    res = runner.invoke(app, ["evaluate-prm", str(data)])
    assert res.exit_code == 1 and "step_scores" in res.output


def test_annotate_command_labels_a_saved_policys_samples(tmp_path, tiny_model):
    """procsup annotate through the CLI: a saved state-mode policy's samples on fresh problems, labelled by
    first-error search; every record has its labels' rollout count."""
    import json

    from typer.testing import CliRunner

    from procsup.cli import app
    from procsup.data.tokenize import StepFormat
    from procsup.models.factory import save_model

    model, tok = tiny_model
    save_model(model, tok, tmp_path / "policy", fmt=StepFormat(), mode="state")
    out = tmp_path / "labels.jsonl"
    result = CliRunner().invoke(app, ["annotate", f"policy={tmp_path / 'policy'}", "task=addition", "index_hints=false",
                                      "method=first-error", "k=2", "problems=3", "size=2", f"output_file={out}",
                                      "progress=false"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all("rollouts" in r["meta"]["annotation"] for r in records)


def test_rl_command_runs_group_rl_with_exact_step_rewards(tmp_path, tiny_model):
    """procsup rl through the CLI on a saved history-mode policy: two updates with the task's exact step
    rewards, a checkpoint at the end."""
    from typer.testing import CliRunner

    from procsup.cli import app
    from procsup.data.io import write_jsonl
    from procsup.data.tokenize import StepFormat
    from procsup.models.factory import save_model
    from procsup.tasks.addition import AdditionTask

    model, tok = tiny_model
    save_model(model, tok, tmp_path / "policy", fmt=StepFormat(), mode="history")
    task = AdditionTask()
    write_jsonl([task.expert(p) for p in task.sample_range(0, 2, 8)], tmp_path / "problems.jsonl")
    result = CliRunner().invoke(app, ["rl", f"model={tmp_path / 'policy'}", "task=addition", "step_reward=exact",
                                      f"train_file={tmp_path / 'problems.jsonl'}", f"output_dir={tmp_path / 'rl'}",
                                      "max_steps=2", "batch_size=4", "group_size=2", "max_new_tokens=12",
                                      "progress=false"])
    assert result.exit_code == 0, result.output
    assert "2 updates" in result.output and (tmp_path / "rl" / "metrics.jsonl").is_file()
