"""A saved model carries its step format (``procsup.json``): every save writes it and every loader reads it
back; a flag that disagrees with it is an error naming both values; a folder of another kind is refused;
``procsup score`` and ``procsup evaluate`` use the saved format instead of asking for separators."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from procsup.cli import app
from procsup.data.io import read_jsonl, write_jsonl
from procsup.data.tokenize import StepFormat, unescape
from procsup.data.trajectory import Step, Trajectory
from procsup.models.action_head import ACTIONS_FILE, ActionHeadModel
from procsup.models.factory import DEFAULT_CHARSET, build_tiny_model, char_tokenizer, load_model, save_model
from procsup.models.prm import build_prm, load_prm, score
from procsup.models.saved import (
    FORMAT_FILE,
    check_kind,
    load_format,
    resolve_format,
    resolve_mode,
    save_format,
)

from conftest import TINY

runner = CliRunner()
#: A non-default, non-ASCII separator (the Math-Shepherd one): unicode_escape used to mangle it.
KI = StepFormat(input_sep=" |", step_sep=" ки")
TRAJS = [Trajectory("12+39", "", (Step("2+9+0=1,1"), Step("1+3+1=5,0"), Step("done"))),
         Trajectory("7+8", "", (Step("7+8+0=5,1"),))]


def flat(scores) -> list[float]:
    return [x for row in scores for x in row]


@pytest.fixture(scope="module")
def ki_tok():
    return char_tokenizer(DEFAULT_CHARSET + "ки")


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory, ki_tok):
    """A PRM saved as the PRM trainer saves one: weights, tokenizer and procsup.json (kind prm, KI)."""
    root = tmp_path_factory.mktemp("prm")
    save_model(*build_tiny_model(TINY, ki_tok, seed=0), root / "backbone")
    prm = build_prm(root / "backbone", seed=0)
    prm.save_pretrained(root / "prm", safe_serialization=True)
    ki_tok.save_pretrained(root / "prm")
    save_format(root / "prm", "prm", KI, "steps")
    return root / "prm"


def test_ki_separator_is_real_tokens(ki_tok):
    """Otherwise the CLI test below would pass on <unk> tokens."""
    assert ki_tok.unk_token_id not in ki_tok(KI.step_sep, add_special_tokens=False)["input_ids"]


def test_save_format_round_trip(tmp_path):
    path = save_format(tmp_path, "policy", KI, "history")
    assert path == tmp_path / FORMAT_FILE and not list(tmp_path.glob("*.tmp"))
    saved = load_format(tmp_path)
    assert (saved.kind, saved.step_format, saved.mode) == ("policy", KI, "history")
    assert saved.procsup_version  # recorded, even from a source tree ("unknown")
    assert json.loads(path.read_text(encoding="utf-8"))["step_format"]["step_sep"] == " ки"
    assert load_format(tmp_path / "nothing-here") is None


def test_save_model_writes_the_format_only_when_given(tmp_path, ki_tok):
    model, _ = build_tiny_model(TINY, ki_tok, seed=0)
    _, _, saved = load_model(save_model(model, ki_tok, tmp_path / "base"))
    assert saved is None and not (tmp_path / "base" / FORMAT_FILE).exists()
    loaded, _, saved = load_model(save_model(model, ki_tok, tmp_path / "policy", KI, "state"))
    assert (saved.kind, saved.step_format, saved.mode) == ("policy", KI, "state")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="mode 'state' given without a step format"):
        save_model(model, ki_tok, tmp_path / "x", mode="state")


def test_prm_round_trip_and_kind_refusal(prm_dir, tmp_path, ki_tok):
    prm, tok, saved = load_prm(prm_dir)
    assert (saved.kind, saved.step_format, saved.mode) == ("prm", KI, "steps")
    assert prm.config.num_labels == 2 and tok(" ки")["input_ids"] == ki_tok(" ки")["input_ids"]

    policy = save_model(*build_tiny_model(TINY, ki_tok, seed=0), tmp_path / "policy", KI, "history")
    with pytest.raises(ValueError, match=f"{policy} holds a 'policy' model, not a 'prm' one"):
        load_prm(policy)
    with pytest.raises(ValueError, match="holds a 'prm' model, not a causal LM"):
        load_model(prm_dir)


def test_action_head_round_trip_and_older_saves(tmp_path):
    backbone, tok = build_tiny_model(TINY, seed=0)
    model = ActionHeadModel(backbone, tok, ("U", "D"), StepFormat(input_sep=" |"), seed=0)
    path = model.save(tmp_path / "head")
    saved = load_format(path)
    assert (saved.kind, saved.step_format, saved.mode) == ("action-head", model.fmt, "state")
    assert ActionHeadModel.load(path).fmt == model.fmt

    meta = json.loads((path / ACTIONS_FILE).read_text(encoding="utf-8"))
    assert "step_format" not in meta  # one home for the format
    (path / ACTIONS_FILE).write_text(json.dumps({**meta, "step_format": {"input_sep": "\n", "step_sep": "\n"}}))
    with pytest.raises(ValueError, match=f"{ACTIONS_FILE}.*disagrees with {FORMAT_FILE}"):
        ActionHeadModel.load(path)
    (path / FORMAT_FILE).unlink()  # a save from before procsup.json: actions.json still holds the format
    assert ActionHeadModel.load(path).fmt == StepFormat(input_sep="\n", step_sep="\n")
    save_format(path, "policy", StepFormat(input_sep="\n", step_sep="\n"))
    with pytest.raises(ValueError, match="holds a 'policy' model, not a 'action-head' one"):
        ActionHeadModel.load(path)


def test_a_flag_that_disagrees_names_both_values_and_the_file(tmp_path):
    save_format(tmp_path, "prm", KI, "history")
    saved = load_format(tmp_path)
    assert resolve_format(saved, tmp_path) == KI
    assert resolve_format(saved, tmp_path, step_sep=" ки", input_sep=" |") == KI  # agreeing flags are fine
    with pytest.raises(ValueError) as e:
        resolve_format(saved, tmp_path, step_sep="\n")
    assert "'\\n'" in str(e.value) and "' ки'" in str(e.value) and str(tmp_path / FORMAT_FILE) in str(e.value)
    with pytest.raises(ValueError, match="mode 'state' disagrees with .*, which records 'history'"):
        resolve_mode(saved, tmp_path, "state", default="state")
    assert resolve_mode(saved, tmp_path, None, default="state") == "history"
    # without a record: the flags over the defaults
    assert resolve_format(None, tmp_path, step_sep="|") == StepFormat(step_sep="|")
    assert resolve_mode(None, tmp_path, None, default="state") == "state"
    check_kind(None, "prm", tmp_path)  # nothing to check against
    with pytest.raises(ValueError, match="holds a 'prm' model, not a 'policy' one"):
        check_kind(saved, "policy", tmp_path)


@pytest.mark.parametrize("text", ["{not json", '["a list"]', '{"kind": "policy"}', '{"kind": "critic", "step_format": {}}',
                                  '{"kind": "prm", "step_format": {"step_sep": ""}}',
                                  '{"kind": "prm", "step_format": {"sep": "|"}}',
                                  '{"kind": "prm", "step_format": {}, "mode": 3}'])
def test_a_corrupt_format_file_is_named(tmp_path, text):
    (tmp_path / FORMAT_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=str(tmp_path / FORMAT_FILE)):
        load_format(tmp_path)


@pytest.mark.parametrize("typed, meant", [("\\n", "\n"), ("\\t|", "\t|"), (" ки", " ки"), ("\\\\n", "\\n"), ("|", "|")])
def test_unescape_decodes_only_newline_tab_and_backslash(typed, meant):
    assert unescape(typed, "--step-sep") == meant


@pytest.mark.parametrize("typed", ["\\x41", "\\u043a", "end\\"])
def test_unescape_refuses_other_escapes(typed):
    with pytest.raises(ValueError, match="--step-sep.*unknown escape"):
        unescape(typed, "--step-sep")


def test_cli_score_uses_the_saved_format(prm_dir, tmp_path, ki_tok):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(TRAJS, data)
    res = runner.invoke(app, ["score", str(prm_dir), str(data), str(out)])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output
    got = flat(t.meta["step_scores"] for t in read_jsonl(out))
    prm, _, _ = load_prm(prm_dir)
    assert got == pytest.approx(flat(score(prm, ki_tok, TRAJS, KI)), abs=1e-6)
    assert got != pytest.approx(flat(score(prm, ki_tok, TRAJS, StepFormat())), abs=1e-6)  # the format matters

    res = runner.invoke(app, ["score", str(prm_dir), str(data), str(out), "--step-sep", " ки"])  # agrees: fine
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["score", str(prm_dir), str(data), str(out), "--step-sep", "\\n"])
    assert res.exit_code == 1
    assert "step_sep '\\n' disagrees with" in res.output and "which records ' ки'" in res.output
    res = runner.invoke(app, ["score", str(prm_dir), str(data), str(out), "--input-sep", "\\n"])
    assert res.exit_code == 1 and "input_sep '\\n'" in res.output and "' |'" in res.output


def test_cli_score_without_a_record_uses_the_flags_and_warns(prm_dir, tmp_path, ki_tok):
    import shutil

    bare = shutil.copytree(prm_dir, tmp_path / "bare")
    (bare / FORMAT_FILE).unlink()
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(TRAJS, data)
    res = runner.invoke(app, ["score", str(bare), str(data), str(out), "--step-sep", " ки", "--input-sep", " |"])
    assert res.exit_code == 0, res.output
    assert f"warning: {bare} has no {FORMAT_FILE}" in res.output
    prm, _, _ = load_prm(prm_dir)
    assert flat(t.meta["step_scores"] for t in read_jsonl(out)) == pytest.approx(flat(score(prm, ki_tok, TRAJS, KI)), abs=1e-6)


def test_cli_score_refuses_a_policy(tmp_path, ki_tok):
    policy = save_model(*build_tiny_model(TINY, ki_tok, seed=0), tmp_path / "policy", KI, "history")
    data = tmp_path / "in.jsonl"
    write_jsonl(TRAJS, data)
    res = runner.invoke(app, ["score", str(policy), str(data), str(tmp_path / "out.jsonl")])
    assert res.exit_code == 1 and "holds a 'policy' model, not a 'prm' one" in res.output


def test_cli_evaluate_reads_the_saved_mode_and_refuses_other_kinds(tmp_path, prm_dir):
    model, tok = build_tiny_model(TINY, seed=0)
    policy = save_model(model, tok, tmp_path / "policy", StepFormat(), "history")
    args = ["evaluate", "addition", str(policy), "--size", "2", "--count", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index('{"task"'):].splitlines()[0])["mode"] == "history"
    res = runner.invoke(app, [*args, "--mode", "state"])
    assert res.exit_code == 1 and "mode 'state' disagrees with" in res.output and "which records 'history'" in res.output
    res = runner.invoke(app, ["evaluate", "addition", str(prm_dir)])
    assert res.exit_code == 1 and "holds a 'prm' model, not a 'policy' one" in res.output
    head = ActionHeadModel(model, tok, ("U", "D")).save(tmp_path / "head")
    res = runner.invoke(app, ["evaluate", "addition", str(head)])
    assert res.exit_code == 1 and "holds a 'action-head' model, not a 'policy' one" in res.output
