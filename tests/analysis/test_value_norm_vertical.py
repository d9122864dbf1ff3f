"""A constructed head whose raw weights look vertical while its value-weighted norms do not
(Kobayashi et al. 2020; docs/maps.md "When raw weights and norms disagree").

A tiny Mockingjay encoder (hidden 32, 2 heads of 16) with hand-set weights in layer 1, head 1:

- input step ``S`` carries +20 in feature 0, every other step -20; ``spec_transform`` copies
  feature 0 into hidden dimension 0 (then positions and the LayerNorm), so dimension 0 marks step S;
- the query is a constant pointing at dimension 0 of the key, which copies dimension 0: every query
  puts most of its weight on key S (a vertical head);
- the value is dimension 0 minus step S's value of it, and the output projection is the identity:
  key S's transformed value is 0 (float rounding), the others' about 10.

So the raw map is vertical (verticality far above the other head's, most of each row on S) and the
value-norm map is not: key S contributes almost nothing, and the remaining weight is spread.
"""

from __future__ import annotations

import numpy as np
import torch

from satool import testing
from satool.analysis.metrics import verticality
from satool.models.loading import load_model
from satool.models.mockingjay.network import position_encoding

S, T = 11, 36


def constructed(tmp_path):
    model = load_model(testing.make_checkpoint(tmp_path / "m.ckpt", preset="tiny", downsample=1, seed=3))
    encoder = model.encoder
    with torch.no_grad():
        embed = encoder.input_representations.spec_transform
        embed.weight.zero_()
        embed.bias.zero_()
        embed.weight[0, 0] = 1.0
        attention = encoder.encoder.layer[0].attention
        for linear in (attention.self.query, attention.self.key, attention.self.value):
            linear.weight[:16].zero_()
            linear.bias[:16].zero_()
        attention.self.query.bias[0] = 2.0  # constant query: score_k = 2 * x_k[0] / sqrt(16)
        attention.self.key.weight[0, 0] = 1.0
        attention.output.dense.weight.copy_(torch.eye(32))
        features = torch.zeros(T, model.config.step_input_dim)
        features[:, 0] = -20.0
        features[S, 0] = 20.0
        positions = position_encoding(T, 32)
        marker = encoder.input_representations(features[None], positions)[0, S, 0]
        attention.self.value.weight[0, 0] = 1.0  # value = dimension 0 - step S's: 0 at S only
        attention.self.value.bias[0] = -marker
    return model, features


def test_a_vertical_head_whose_attended_key_adds_nothing_is_not_vertical_in_norms(tmp_path):
    model, features = constructed(tmp_path)
    raw = model.encode_maps(features, maps="attention", layers=[0]).attentions.numpy()
    norm = model.encode_maps(features, maps="value-norm", layers=[0]).attentions.numpy()
    norms = model.encode([features], layers=[0], want_value_norms=True)[0].value_norms[0, 0].numpy()
    assert norms[S] < 1e-4 * np.median(np.delete(norms, S))  # key S's transformed value is (nearly) 0

    on_s_raw, on_s_norm = raw[0, 0, :, S], norm[0, 0, :, S]
    assert on_s_raw.min() > 0.6  # every query puts most of its weight on key S ...
    assert on_s_norm.max() < 0.05  # ... which adds almost nothing to any query's output

    v_raw, v_norm = verticality(raw)[0], verticality(norm)[0]
    assert v_raw[0] > v_raw[1] + 0.5  # the raw map reads as the vertical head of the layer
    assert v_norm[0] < v_raw[0] - 1.0  # its norms do not: the mean row spreads over the other keys
    uniform = -np.log(T)
    assert v_norm[0] < uniform + 0.2  # nearly as flat as uniform attention
