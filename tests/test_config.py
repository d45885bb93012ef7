"""build_config: YAML, then key=value overrides, onto PALConfig, with types coerced from text; nested
groups of fields (``grid.steps=300``); the trainer configs' shared options."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from procsup.config import build_config, config_help, field_docs
from procsup.trainers.action_head import ActionHeadConfig
from procsup.trainers.options import CheckpointOptions
from procsup.trainers.pal import PALConfig
from procsup.trainers.prm import PRMConfig


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: out\nmode: state\nlam: 2.0\nbatch_size: 16\nmodel: some/dir\n")
    cfg = build_config(
        PALConfig, path,
        ["batch_size=8", "--learning-rate=1e-3", "lam=0.5", "resume=true", "mode=outcome", "model=none", "progress=off"],
    )
    assert cfg.output_dir == "out"  # from the file
    assert cfg.batch_size == 8 and type(cfg.batch_size) is int  # overrides win
    assert cfg.learning_rate == 1e-3 and type(cfg.learning_rate) is float  # --dashes become underscores
    assert cfg.lam == 0.5
    assert cfg.resume is True and cfg.progress is False
    assert cfg.mode == "outcome"
    assert cfg.model is None


def test_overrides_only():
    cfg = build_config(PALConfig, None, ["output_dir=o", "answer_prefix=A=", "train_file=data.jsonl", "seed=3"])
    assert cfg.answer_prefix == "A="  # split at the first "=" only
    assert cfg.train_file == "data.jsonl" and cfg.seed == 3


@pytest.mark.parametrize(
    "override, match",
    [
        ("batch_sise=8", "batch_sise"),  # unknown key, named
        ("batch_size=eight", "batch_size"),
        ("lam=much", "lam"),
        ("resume=maybe", "resume"),
        ("mode=steps", "mode"),
        ("batch_size", "key=value"),
        ("batch_size=0", "batch_size"),  # the dataclass's own validation still runs
    ],
)
def test_bad_overrides(override, match):
    with pytest.raises(ValueError, match=match):
        build_config(PALConfig, None, ["output_dir=o", override])


def test_unknown_yaml_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: out\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        build_config(PALConfig, path)


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("- output_dir\n- out\n")
    with pytest.raises(ValueError, match="mapping"):
        build_config(PALConfig, path)


def test_field_docs():
    docs = field_docs(PALConfig)
    assert "lambda" in docs["lam"]
    assert "boundary token" in docs["step_sep"]
    assert set(docs) == {f for f in PALConfig.__dataclass_fields__}  # every field is documented
    assert "\n" not in docs["mode"]  # whitespace collapsed to one line
    assert "lam=1.0: lambda" in config_help(PALConfig)


@pytest.mark.parametrize("cls", [PALConfig, PRMConfig, ActionHeadConfig])
def test_trainer_configs_share_documented_checked_options(cls):
    """Every trainer's config inherits the optimizer fields (procsup.trainers.options): documented in its
    help, checked by one __post_init__, and a trainer's own default (PRM: lr 1e-4, batch 16) wins."""
    required = {"output_dir": "x", **({"actions": ("U", "D")} if cls is ActionHeadConfig else {})}
    docs = field_docs(cls)
    assert set(docs) == set(cls.__dataclass_fields__)  # inherited fields documented too
    lines = config_help(cls).splitlines()
    assert lines[0].startswith("output_dir=(required)")  # the class's own fields first
    assert any(line.startswith("max_grad_norm=1.0: Gradient clipping") for line in lines)
    for bad in ({"max_steps": 0}, {"log_steps": 0}, {"warmup_steps": -1}, {"learning_rate": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            cls(**required, **bad)
    if issubclass(cls, CheckpointOptions):
        with pytest.raises(ValueError, match="save_total_limit"):
            cls(**required, save_total_limit=0)  # PAL took 0 and then deleted every checkpoint, the final one too
    with pytest.raises(TypeError):
        cls("x")  # keyword-only: a positional value cannot land in the wrong field
    cfg = cls(**required)
    expected = (1e-4, 16) if cls is PRMConfig else (3e-4, 32)
    assert (cfg.learning_rate, cfg.batch_size) == expected


@dataclass
class _Row:
    """A nested group of fields."""

    steps: int = 300
    """Optimizer steps of the row."""
    views: tuple[str, ...] = ("trail",)
    """Views."""
    lr: float | None = None
    """Learning rate."""


@dataclass
class _Bench:
    """A config with a nested group."""

    seed: int = 0
    """Seed."""
    grid: _Row = field(default_factory=_Row)
    """The grid row."""
    logic: _Row = field(default_factory=lambda: _Row(steps=5))
    """The logic row."""


def test_nested_overrides_are_typed_and_merge_with_yaml(tmp_path):
    cfg = build_config(_Bench, None, ["grid.steps=100", "grid.views=trail,field", "--grid.lr=1e-3", "seed=2"])
    assert cfg.grid == _Row(steps=100, views=("trail", "field"), lr=1e-3) and type(cfg.grid.steps) is int
    assert cfg.logic == _Row(steps=5) and cfg.seed == 2  # an untouched group keeps its own default
    path = tmp_path / "bench.yaml"
    path.write_text("grid:\n  steps: 100\n  lr: 0.5\nlogic: {views: [field]}\n")
    cfg = build_config(_Bench, path, ["grid.lr=none"])
    assert cfg.grid == _Row(steps=100, lr=None)  # the file's other grid fields survive an override of one
    assert cfg.logic == _Row(steps=5, views=("field",))  # the group's own default (steps=5) under the file's values


@pytest.mark.parametrize(
    "override, match",
    [
        ("grid.stepz=3", r"unknown field 'grid\.stepz'; known: grid\.lr, grid\.steps, grid\.views, logic\.lr"),
        ("grid=3", "'grid' is a group of fields"),
        ("seed.x=1", r"unknown field 'seed\.x'"),
        ("grid.steps=many", r"grid\.steps must be int"),
    ],
)
def test_bad_nested_overrides(override, match):
    with pytest.raises(ValueError, match=match):
        build_config(_Bench, None, [override])


def test_bad_nested_yaml(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("grid:\n  stepz: 3\n")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['grid\.stepz'\]; known: grid\.lr, grid\.steps"):
        build_config(_Bench, path)
    path.write_text("grid: 3\n")
    with pytest.raises(ValueError, match="grid is a group of fields"):
        build_config(_Bench, path)


def test_config_help_lists_nested_fields():
    lines = config_help(_Bench).splitlines()
    assert lines[0] == "seed=0: Seed."
    assert "grid.steps=300: Optimizer steps of the row." in lines
    assert "logic.steps=5: Optimizer steps of the row." in lines  # the group's default, not the class's
    assert len(lines) == 7


# --- YAML values go through the same typed parser as key=value ---


def _yaml(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_values_are_typed_like_overrides(tmp_path):
    """YAML ``resume: "false"`` resumed (a non-empty string is truthy) and ``1e-3`` stayed a string (PyYAML
    wants ``1.0e-3``): each YAML value now means what the same text means as key=value."""
    path = _yaml(tmp_path, 'output_dir: out\nresume: "false"\nprogress: "off"\nlearning_rate: 1e-3\nlam: 1\n'
                           'max_grad_norm: "0.5"\nbatch_size: "8"\nmodel: null\n')
    cfg = build_config(PALConfig, path)
    assert cfg.resume is False and cfg.progress is False
    assert cfg.learning_rate == 1e-3 and type(cfg.learning_rate) is float
    assert cfg.lam == 1.0 and type(cfg.lam) is float
    assert cfg.max_grad_norm == 0.5 and cfg.batch_size == 8 and cfg.model is None
    words = ["output_dir=out", "resume=false", "progress=off", "learning_rate=1e-3", "lam=1", "max_grad_norm=0.5",
             "batch_size=8", "model=null"]
    assert build_config(PALConfig, None, words) == cfg


def test_yaml_lists_become_tuples_and_scalars_one_item_tuples(tmp_path):
    cfg = build_config(_Bench, _yaml(tmp_path, "grid: {views: [a, b]}\nlogic: {views: c}\n"))
    assert cfg.grid.views == ("a", "b") and cfg.logic.views == ("c",)


@pytest.mark.parametrize(
    "text, match",
    [
        ("resume: maybe", r"run.yaml: resume must be true or false, got 'maybe'"),
        ("resume: 2", "resume must be true or false, got 2"),
        ("lam: much", "lam must be float, got 'much'"),
        ("lam: true", "lam must be float, got True"),
        ("lam: .nan", "lam must be a finite number"),
        ("learning_rate: inf", "learning_rate must be a finite number"),
        ("batch_size: 3.0", "batch_size must be int, got 3.0"),
        ("batch_size: true", "batch_size must be int, got True"),
        ("batch_size: null", "batch_size must not be null"),
        ("batch_size: [1, 2]", "batch_size must be a single value, got a list"),
        ("output_dir: 2024", r"output_dir must be a string, got 2024 \(int\); quote it"),
        ("output_dir: {a: 1}", "output_dir must be a single value, got a mapping"),
        ("mode: 1", "mode must be a string"),
        ("mode: steps", "mode must be one of"),
    ],
)
def test_bad_yaml_values_name_file_and_field(tmp_path, text, match):
    path = _yaml(tmp_path, "output_dir: out\n" + text + "\n" if not text.startswith("output_dir") else text + "\n")
    with pytest.raises(ValueError, match=match) as info:
        build_config(PALConfig, path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize(
    "text, match",
    [
        ("output_dir: [unclosed\n", r"run.yaml:2: invalid YAML"),
        ("output_dir: out\n  bad: indent\n", r"run.yaml:2: invalid YAML"),
        ("output_dir: a\noutput_dir: b\n", r"run.yaml:2: invalid YAML: duplicate key 'output_dir'"),
        ("- output_dir\n- out\n", r"run.yaml:1: a config file must be a mapping of field: value, got a list"),
        ("just text\n", "got a str"),
        ("1: 2\n", "field names must be strings"),
        ("\t- x\n", "invalid YAML"),
    ],
)
def test_broken_yaml_is_one_line_naming_file_and_line(tmp_path, text, match):
    with pytest.raises(ValueError, match=match) as info:
        build_config(PALConfig, _yaml(tmp_path, text))
    assert "\n" not in str(info.value)


def test_unreadable_config_files_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="no such config file"):
        build_config(PALConfig, tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="is a folder"):
        build_config(PALConfig, tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"output_dir: \xff\n")
    with pytest.raises(ValueError, match="bin.yaml: not valid UTF-8"):
        build_config(PALConfig, tmp_path / "bin.yaml")
    assert build_config(PALConfig, _yaml(tmp_path, ""), ["output_dir=o"]).output_dir == "o"  # empty file: no fields


def test_nested_yaml_values_are_typed(tmp_path):
    cfg = build_config(_Bench, _yaml(tmp_path, 'grid: {steps: "100", lr: 1e-3}\n'))
    assert cfg.grid.steps == 100 and cfg.grid.lr == 1e-3
    with pytest.raises(ValueError, match=r"bench.yaml: grid.steps must be int, got 'many'"):
        build_config(_Bench, _yaml(tmp_path, "grid: {steps: many}\n", "bench.yaml"))


def test_tuple_of_pairs_from_text_and_yaml(tmp_path):
    """``beams=2,4,4,4`` became ((2,), (4,), (4,), (4,)) without a word; pairs are ``2:4,4:4`` or a YAML list."""
    from procsup.bench.prm import PRMBenchConfig

    assert build_config(PRMBenchConfig, None, ["beams=2:4,8:2"]).beams == ((2, 4), (8, 2))
    assert build_config(PRMBenchConfig, _yaml(tmp_path, "beams: [[2, 4], [8, 2]]\n")).beams == ((2, 4), (8, 2))
    with pytest.raises(ValueError, match="beams must be 2 values, got 1"):
        build_config(PRMBenchConfig, None, ["beams=2,4"])
    with pytest.raises(ValueError, match=r"run.yaml: beams\[0\] must be 2 values, got 3"):
        build_config(PRMBenchConfig, _yaml(tmp_path, "beams: [[2, 4, 1]]\n"))


def test_override_floats_must_be_finite():
    with pytest.raises(ValueError, match="lam must be a finite number"):
        build_config(PALConfig, None, ["output_dir=o", "lam=inf"])
