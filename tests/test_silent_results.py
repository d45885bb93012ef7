"""Cases that used to give a silently wrong result and now give an error (issue 13)."""

from __future__ import annotations

import pytest

from procsup.config import build_config
from procsup.data.trajectory import Trajectory
from procsup.models.factory import save_model
from procsup.models.prm import load_prm
from procsup.trainers.pal import PALConfig, check_data_mode, train


def test_a_separator_typed_as_key_value_is_decoded_like_the_score_flag():
    # it stayed the two characters backslash-n, while `procsup score --step-sep '\n'` decoded it: scores moved
    cfg = build_config(PALConfig, overrides=["output_dir=x", "step_sep=\\n", "answer_prefix=A\\t"])
    assert (cfg.step_sep, cfg.answer_prefix) == ("\n", "A\t")
    with pytest.raises(ValueError, match="unknown escape"):
        build_config(PALConfig, overrides=["output_dir=x", "step_sep=\\x"])


def test_a_causal_lm_folder_is_not_read_as_a_prm(tmp_path, tiny_model):
    # it loaded with a random token-classification head and scored at chance without a word
    model, tok = tiny_model
    save_model(model, tok, tmp_path / "lm")
    with pytest.raises(ValueError, match="not a PRM"):
        load_prm(tmp_path / "lm")


def test_data_made_for_one_mode_is_refused_in_the_other(tmp_path, tiny_model, history_trajs):
    # state mode on history-format data trained silently, then evaluated at 0%
    made = [Trajectory(t.input, t.target, t.steps, {**t.meta, "mode": "history"}) for t in history_trajs]
    with pytest.raises(ValueError, match="made for mode=history"):
        check_data_mode(made, "state", "d.jsonl")
    check_data_mode(made, "outcome", "d.jsonl")  # x -> y reads no step
    check_data_mode(history_trajs, "state", "d.jsonl")  # no record of the mode: nothing to check
    model, tok = tiny_model
    with pytest.raises(ValueError, match="made for mode=history"):
        train(PALConfig(output_dir=str(tmp_path / "run"), mode="state", max_steps=1, progress=False),
              model=model, tokenizer=tok, trajectories=made)
