"""Attention maps in query blocks (streaming passes): the same weights as the whole-map path, in blocks
that stay within the budget, for Mockingjay and for wav2vec 2.0 / HuBERT / WavLM."""

from __future__ import annotations

import pytest
import torch

from satool import testing
from satool.models.base import rows_per_block
from satool.models.loading import load_model


def collect(model, features, layers, block_bytes, heads=None):
    got, largest = {}, 0
    for layer, first, probs in model.attention_blocks(features, layers, block_bytes=block_bytes, heads=heads):
        asked = model.num_heads if heads is None or layer not in heads else len(set(heads[layer]))
        assert probs.shape[0] == asked and probs.shape[1] >= 1
        largest = max(largest, probs.numel() * 4)
        got.setdefault(layer, []).append((first, probs.clone()))
    maps = {}
    for layer, blocks in got.items():
        assert [b[0] for b in blocks] == sorted(b[0] for b in blocks)  # queries in order, each once
        maps[layer] = torch.cat([b[1] for b in blocks], dim=1)
    return maps, largest


def check_blocks(model, features, steps):
    whole = model.encode([features])[0].attentions
    for layers in ([0, 1], [1], [0]):
        for budget in (10**9, model.num_heads * steps * 4 * 5, 1):
            maps, largest = collect(model, features, layers, budget)
            assert sorted(maps) == layers
            for layer in layers:
                torch.testing.assert_close(maps[layer], whole[layer], rtol=1e-5, atol=1e-6)
            assert largest <= max(budget, model.num_heads * steps * 4)  # one query row at least
    # weights of some heads only: those heads' maps (later layers' to float rounding: the other heads of an
    # earlier layer run fused attention); a layer left out of ``heads`` gives every head
    for heads in ({0: [1]}, {0: [0, 0], 1: [1]}, {1: [model.num_heads - 1]}, {0: list(range(model.num_heads))}):
        for budget in (10**9, 2 * steps * 4 * 3, 1):
            maps, largest = collect(model, features, [0, 1], budget, heads)
            for layer in (0, 1):
                chosen = sorted(set(heads.get(layer, range(model.num_heads))))
                torch.testing.assert_close(maps[layer], whole[layer][chosen], rtol=1e-5, atol=1e-6)
            assert largest <= max(budget, model.num_heads * steps * 4)
    with pytest.raises(ValueError, match="out of range"):
        collect(model, features, [0], 10**9, {0: [model.num_heads]})


def test_rows_per_block_respects_the_budget():
    assert rows_per_block(16 * 3000 * 4 * 10, 16, 3000) == 10
    assert rows_per_block(1, 16, 3000) == 1
    assert rows_per_block(10**12, 16, 30) == 30


def test_mockingjay_blocks_equal_the_whole_maps(tmp_path):
    model = load_model(testing.make_checkpoint(tmp_path / "m.ckpt", preset="tiny"))
    features = torch.randn(37, model.config.step_input_dim)
    check_blocks(model, features, 37)


def test_hf_blocks_equal_the_whole_maps(tmp_path):
    pytest.importorskip("transformers")
    from test_hf_models import VARIANTS, build

    wave = testing.tone_audio(testing.DEFAULT_PHONES, seed=3)
    for i, (model_type, stable) in enumerate(VARIANTS):
        model = load_model(build(tmp_path, model_type, stable, seed=i))
        features = model.input_features(wave)
        check_blocks(model, features, model.steps(features))
