"""PositionReader: logits and gradients at chosen positions equal the full forward's, on every architecture."""

import pytest
import torch
from transformers import AutoModelForTokenClassification

from procsup.data.trajectory import Step, Trajectory
from procsup.models.factory import TinyModelConfig, char_tokenizer, tiny_hf_config
from procsup.models.positions import PositionReader, supports_sparse_last_block
from procsup.trainers.prm import PRMConfig, train_prm


def _classifier(arch: str, num_labels: int = 2, **sizes):
    config = tiny_hf_config(TinyModelConfig(arch=arch, hidden_size=32, num_heads=4, **sizes), char_tokenizer())
    config.num_labels = num_labels
    config.classifier_dropout = 0.0
    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_config(config)


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(5, 60, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 8:] = 0
    mask[2, 5:] = 0  # right padding, rows of 12, 8 and 5 tokens
    rows = torch.tensor([0, 0, 0, 1, 1, 2])
    cols = torch.tensor([2, 7, 11, 3, 7, 4])  # several per row, the last token of each row among them
    return ids, mask, rows, cols


@pytest.mark.parametrize("arch,sparse", [("llama", True), ("qwen2", True), ("gpt2", False), ("neox", False)])
@pytest.mark.parametrize("num_labels", [2, 1])
def test_logits_and_gradients_equal_the_full_forward(arch, sparse, num_labels):
    model = _classifier(arch, num_labels)
    assert supports_sparse_last_block(model) is sparse
    ids, mask, rows, cols = _batch()
    reader = PositionReader(model)
    assert reader.sparse is sparse
    picked = reader(ids, mask, rows, cols)
    full = model(input_ids=ids, attention_mask=mask).logits[rows, cols]
    assert picked.shape == (6, num_labels)
    torch.testing.assert_close(picked, full, atol=1e-5, rtol=1e-5)
    params = [p for p in model.parameters() if p.requires_grad]
    weights = torch.linspace(-1, 1, picked.numel()).view_as(picked)
    g_sparse = torch.autograd.grad((picked * weights).sum(), params, allow_unused=True)
    g_full = torch.autograd.grad((full * weights).sum(), params, allow_unused=True)
    for name, a, b in zip([n for n, p in model.named_parameters() if p.requires_grad], g_sparse, g_full):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_grouped_query_attention_and_no_positions():
    config = tiny_hf_config(TinyModelConfig(hidden_size=32, num_heads=4), char_tokenizer())
    config.num_key_value_heads, config.num_labels, config.classifier_dropout = 2, 2, 0.0
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_config(config)
    ids, mask, rows, cols = _batch()
    torch.testing.assert_close(PositionReader(model)(ids, mask, rows, cols),
                               model(input_ids=ids, attention_mask=mask).logits[rows, cols], atol=1e-5, rtol=1e-5)
    shuffled = torch.tensor([3, 0, 5, 1, 4, 2])  # positions in any order
    torch.testing.assert_close(PositionReader(model)(ids, mask, rows[shuffled], cols[shuffled]),
                               model(input_ids=ids, attention_mask=mask).logits[rows, cols][shuffled], atol=1e-5, rtol=1e-5)
    empty = torch.zeros(0, dtype=torch.long)
    assert PositionReader(model)(ids, mask, empty, empty).shape == (0, 2)


def test_left_padding():
    model = _classifier("llama")
    ids, mask, _, _ = _batch()
    mask = mask.flip(1)  # rows padded on the left
    rows, cols = torch.tensor([0, 1, 1, 2]), torch.tensor([5, 6, 11, 11])
    torch.testing.assert_close(PositionReader(model)(ids, mask, rows, cols),
                               model(input_ids=ids, attention_mask=mask).logits[rows, cols], atol=1e-5, rtol=1e-5)


def test_a_one_block_model():  # every block but the last is none at all
    model = _classifier("llama", num_layers=1)
    ids, mask, rows, cols = _batch()
    torch.testing.assert_close(PositionReader(model)(ids, mask, rows, cols),
                               model(input_ids=ids, attention_mask=mask).logits[rows, cols], atol=1e-5, rtol=1e-5)


def test_unsupported_blocks_fall_back():
    model = _classifier("llama")
    model.model.layers[-1].self_attn.attention_dropout = 0.1  # the fast path has no attention dropout
    assert not supports_sparse_last_block(model) and not PositionReader(model).sparse
    assert not PositionReader(_classifier("llama"), sparse=False).sparse


def test_training_with_and_without_the_sparse_block_ends_at_the_same_weights(tmp_path):
    tok = char_tokenizer()
    trajs = [Trajectory(f"{a}+{b}", "", (Step(f"{a}+{b}={a + b}", label=True), Step(f"{a + b}={a + b + 1}", label=False),
                                         Step("done", label=None)))
             for a in range(4) for b in range(3)]
    weights = []
    for sparse in (True, False):
        cfg = PRMConfig(output_dir=str(tmp_path / str(sparse)), batch_size=4, max_steps=6, warmup_steps=1,
                        learning_rate=1e-2, progress=False, sparse_last_block=sparse)
        result = train_prm(cfg, model=_classifier("llama"), tokenizer=tok, trajectories=trajs)
        weights.append(result.model.state_dict())
        assert result.final_metrics["loss"] > 0
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], atol=1e-4, rtol=1e-4, msg=name)
