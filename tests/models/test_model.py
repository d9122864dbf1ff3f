"""The Mockingjay encoder: parity with s3prl, masking semantics, helpers, presets."""

from __future__ import annotations

import math

import pytest
import torch

from satool.models.mockingjay import (
    PRESETS,
    MockingjayConfig,
    MockingjayEncoder,
    SpecHead,
    encode_chunked,
    position_encoding,
    stack_frames,
    unstack_frames,
)

try:
    from s3prl.upstream.mockingjay.model import (
        TransformerConfig,
        TransformerModel,
        TransformerSpecPredictionHead,
    )
except Exception as exc:  # pragma: no cover - depends on the environment
    S3PRL_MISSING = f"s3prl==0.4.18 is not importable ({type(exc).__name__}: {exc})"
else:
    S3PRL_MISSING = ""

try:
    from s3prl.upstream.mockingjay.builder import PretrainedTransformer, get_sinusoid_table
except Exception as exc:  # pragma: no cover
    BUILDER_MISSING = f"s3prl's builder is not importable ({type(exc).__name__}: {exc})"
else:
    BUILDER_MISSING = ""



def needs_s3prl(test):
    return pytest.mark.s3prl(pytest.mark.skipif(bool(S3PRL_MISSING), reason=S3PRL_MISSING)(test))


def needs_builder(test):
    return pytest.mark.s3prl(
        pytest.mark.skipif(bool(BUILDER_MISSING), reason=BUILDER_MISSING)(test))

ATOL = 1e-5


def _tiny(**overrides) -> MockingjayConfig:
    return MockingjayConfig.preset("tiny", input_dim=24, **overrides)


def _padded_batch(config: MockingjayConfig, lengths=(50, 31, 7), seed=0):
    """Features [batch, step, dim] that are zero past each length, and the lengths."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    steps = int(lengths.max())
    x = torch.randn(len(lengths), steps, config.step_input_dim, generator=gen)
    x = x * (torch.arange(steps)[None, :, None] < lengths[:, None, None])
    return x, lengths


def _s3prl_pair(config: MockingjayConfig, seed=0):
    torch.manual_seed(seed)
    theirs = TransformerModel(TransformerConfig(config.to_s3prl()), config.step_input_dim,
                              output_attentions=True).eval()
    # Non-trivial LayerNorm parameters, so the parity covers them too.
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    ours = MockingjayEncoder(config).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


def _max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


# -- parity with s3prl -------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pre_layer_norm": True},
        {"share_layer": True},
        {"pre_layer_norm": True, "share_layer": True, "num_layers": 3},
        {"hidden_act": "swish", "num_heads": 4},
    ],
    ids=["post-LN", "pre-LN", "shared", "pre-LN-shared", "swish-4-heads"],
)
@pytest.mark.parametrize("with_head_mask", [False, True], ids=["all-heads", "head-mask"])
@needs_s3prl
def test_parity_with_s3prl(overrides, with_head_mask):
    config = _tiny(**overrides)
    theirs, ours = _s3prl_pair(config)
    x, lengths = _padded_batch(config)
    steps = x.shape[1]
    valid = (torch.arange(steps)[None, :] < lengths[:, None]).float()
    positions = position_encoding(steps, config.hidden_size).expand(len(x), -1, -1)
    head_mask = None
    if with_head_mask:
        head_mask = torch.rand(config.num_layers, config.num_heads,
                               generator=torch.Generator().manual_seed(1))
        head_mask[0, 1] = 0.0
        head_mask[-1, 0] = 1.0
    with torch.no_grad():
        their_maps, their_hidden = theirs(x, positions, valid, head_mask=head_mask)
        out = ours(x, lengths, head_mask=head_mask)
    assert len(out.hidden_states) == config.num_layers + 1 == len(their_hidden)
    assert _max_diff(out.hidden_states, their_hidden) < ATOL
    assert _max_diff(out.attentions, their_maps) < ATOL
    # Padded keys get (almost) no attention.
    assert out.attentions[0][2, :, :, 7:].max() < 1e-3


@needs_builder
def test_position_encoding_equals_s3prl_table():
    for hidden in (32, 24):
        table = get_sinusoid_table(hidden)
        ours = position_encoding(table.shape[0], hidden)
        assert torch.equal(ours, table)


@needs_s3prl
def test_spec_head_matches_s3prl():
    config = _tiny(output_dim=10)
    torch.manual_seed(0)
    theirs = TransformerSpecPredictionHead(TransformerConfig(config.to_s3prl()), 10).eval()
    ours = SpecHead(config).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    hidden = torch.randn(2, 9, config.hidden_size)
    with torch.no_grad():
        assert (ours(hidden) - theirs(hidden)[0]).abs().max() < ATOL


@needs_s3prl
def test_state_dict_keys_are_s3prls():
    for overrides in ({}, {"pre_layer_norm": True}, {"share_layer": True}):
        config = _tiny(**overrides)
        theirs = TransformerModel(TransformerConfig(config.to_s3prl()), config.step_input_dim)
        ours = MockingjayEncoder(config)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        # ...both ways.
        theirs.load_state_dict(ours.state_dict(), strict=True)


# -- chunked encoding of long inputs ------------------------------------------


@pytest.mark.parametrize("steps,limit", [(101, 40), (90, 30), (100, 33)])
@needs_builder
def test_chunking_matches_s3prl_builder(tmp_path, steps, limit):
    from satool.models.mockingjay.checkpoint import load_checkpoint, save_checkpoint

    config = _tiny(max_input_length=limit)
    torch.manual_seed(0)
    path = tmp_path / "chunk.ckpt"
    save_checkpoint(path, MockingjayEncoder(config), runner_config={})
    options = {"ckpt_file": str(path), "load_pretrain": "True", "no_grad": "True",
               "dropout": "default", "spec_aug": "False", "spec_aug_prev": "True",
               "output_hidden_states": "True", "select_layer": -1, "permute_input": "False"}
    builder = PretrainedTransformer(options, inp_dim=config.input_dim).eval()
    # One utterance ends inside the second chunk: its last chunk is all padding.
    x, lengths = _padded_batch(config, lengths=(steps, limit + 3))
    checkpoint = load_checkpoint(path)
    with torch.no_grad():
        _, their_hidden = builder._forward(x)
        ours = checkpoint.encode(x, lengths)
        unchunked = checkpoint.encode(x, lengths, chunk_long_inputs=False)
    assert math.ceil(steps / limit) > 1
    assert _max_diff(ours.hidden_states, their_hidden) < ATOL
    # Chunked maps are block-diagonal: nothing crosses a chunk boundary.
    size = math.ceil(steps / math.ceil(steps / limit))
    assert ours.attentions[0][0, :, :size, size:].abs().max() == 0
    assert ours.attentions[0][0, :, :size, :size].sum(-1).sub(1).abs().max() < 1e-5
    assert _max_diff(unchunked.hidden_states[:1], ours.hidden_states[:1]) > 0


def test_chunking_is_a_no_op_for_short_inputs():
    config = _tiny(max_input_length=60)
    encoder = MockingjayEncoder(config).eval()
    x, lengths = _padded_batch(config)
    with torch.no_grad():
        a = encode_chunked(encoder, x, lengths)
        b = encoder(x, lengths)
    assert _max_diff(a.hidden_states, b.hidden_states) == 0


# -- masking semantics -----------------------------------------------------------


def test_head_mask_zeroes_the_head_and_its_contribution():
    config = _tiny(num_heads=4, hidden_size=32)
    torch.manual_seed(0)
    encoder = MockingjayEncoder(config).eval()
    x, lengths = _padded_batch(config)
    layer, head = 1, 2
    mask = torch.ones(config.num_layers, config.num_heads)
    mask[layer, head] = 0
    with torch.no_grad():
        masked = encoder(x, lengths, head_mask=mask)
        assert masked.attentions[layer][:, head].abs().max() == 0
        assert masked.attentions[layer][:, head - 1].sum(-1).sub(1).abs().max() < 1e-5
        # Same as a head whose values are all zero: it adds nothing before
        # the output projection.
        d = config.head_size
        value = encoder.encoder.layer[layer].attention.self.value
        value.weight[head * d:(head + 1) * d] = 0
        value.bias[head * d:(head + 1) * d] = 0
        silent = encoder(x, lengths)
    assert _max_diff(masked.hidden_states, silent.hidden_states) < 1e-6


def test_fractional_head_mask_scales_the_map():
    config = _tiny()
    encoder = MockingjayEncoder(config).eval()
    x, lengths = _padded_batch(config)
    mask = torch.ones(config.num_layers, config.num_heads)
    mask[0, 1] = 0.25
    with torch.no_grad():
        full = encoder(x, lengths)
        scaled = encoder(x, lengths, head_mask=mask)
    torch.testing.assert_close(scaled.attentions[0][:, 1], 0.25 * full.attentions[0][:, 1])
    torch.testing.assert_close(scaled.attentions[0][:, 0], full.attentions[0][:, 0])


def test_one_dimensional_head_mask_applies_to_every_layer():
    config = _tiny()
    encoder = MockingjayEncoder(config).eval()
    x, _ = _padded_batch(config)
    with torch.no_grad():
        out = encoder(x, head_mask=torch.tensor([1.0, 0.0]))
    assert all(m[:, 1].abs().max() == 0 for m in out.attentions)
    with pytest.raises(ValueError, match="head_mask"):
        encoder(x, head_mask=torch.ones(3, 3))


@pytest.mark.parametrize("span", [0, 1, 5])
def test_attention_span_zeroes_far_weights_without_renormalising(span):
    config = _tiny()
    encoder = MockingjayEncoder(config).eval()
    x, lengths = _padded_batch(config)
    with torch.no_grad():
        free = encoder(x, lengths)
        narrow = encoder(x, lengths, attention_span=span)
    steps = x.shape[1]
    pos = torch.arange(steps)
    far = (pos[:, None] - pos[None, :]).abs() > span
    for maps in narrow.attentions:
        assert maps[..., far].abs().max() == 0
    # Layer 0 sees the same input, so inside the band the weights are the
    # un-pruned softmax weights (no renormalisation).
    near = ~far
    torch.testing.assert_close(narrow.attentions[0][..., near], free.attentions[0][..., near])
    assert narrow.attentions[0][0].sum(-1).min() < 0.99  # rows lost their far weight


def test_fused_attention_path_matches_explicit_path():
    for overrides in ({}, {"pre_layer_norm": True}):
        config = _tiny(**overrides)
        encoder = MockingjayEncoder(config).eval()
        x, lengths = _padded_batch(config)
        with torch.no_grad():
            explicit = encoder(x, lengths)
            fused = encoder(x, lengths, output_attentions=False)
        assert fused.attentions is None
        assert _max_diff(explicit.hidden_states, fused.hidden_states) < 1e-5


def test_paper_era_hidden_states_have_no_embedding_output():
    config = _tiny(embedding_in_hidden_states=False)
    encoder = MockingjayEncoder(config).eval()
    x, lengths = _padded_batch(config)
    with torch.no_grad():
        paper = encoder(x, lengths)
        current = MockingjayEncoder(config.replace(embedding_in_hidden_states=True)).eval()
        current.load_state_dict(encoder.state_dict())
        full = current(x, lengths)
    assert len(paper.hidden_states) == config.num_layers
    assert _max_diff(paper.hidden_states, full.hidden_states[1:]) == 0


def test_encoder_runs_in_float64_and_rejects_wrong_shapes():
    config = _tiny()
    encoder = MockingjayEncoder(config).double().eval()
    x, lengths = _padded_batch(config)
    with torch.no_grad():
        out = encoder(x.double(), lengths)
    assert out.last_hidden_state.dtype == torch.float64
    with pytest.raises(ValueError, match="features must be"):
        encoder(x[..., :-1].double())


def test_dropout_is_active_only_in_training():
    config = _tiny(hidden_dropout=0.5, attention_dropout=0.5)
    encoder = MockingjayEncoder(config)
    x, _ = _padded_batch(config)
    encoder.train()
    a = encoder(x).last_hidden_state
    b = encoder(x).last_hidden_state
    assert not torch.equal(a, b)
    encoder.eval()
    assert torch.equal(encoder(x).last_hidden_state, encoder(x).last_hidden_state)


# -- frame stacking -----------------------------------------------------------


def test_stack_frames_drops_the_remainder_and_concatenates_in_order():
    frames = torch.arange(2 * 7 * 2, dtype=torch.float32).reshape(2, 7, 2)
    stacked = stack_frames(frames, 3)
    assert stacked.shape == (2, 2, 6)
    assert stacked[0, 0].tolist() == frames[0, 0:3].reshape(-1).tolist()
    assert stacked[1, 1].tolist() == frames[1, 3:6].reshape(-1).tolist()
    assert torch.equal(unstack_frames(stacked, 3), frames[:, :6])
    assert stack_frames(frames, 1) is frames
    assert stack_frames(frames[:, :2], 3).shape == (2, 0, 6)


def test_downsampled_model_reads_stacked_frames():
    config = _tiny(downsample_rate=3, output_dim=5)
    encoder, head = MockingjayEncoder(config).eval(), SpecHead(config).eval()
    frames = torch.randn(2, 31, config.input_dim)
    steps = stack_frames(frames, 3)
    with torch.no_grad():
        out = encoder(steps, torch.tensor([10, 8]))
        prediction = head(out.last_hidden_state)
    assert encoder.input_representations.spec_transform.in_features == 3 * config.input_dim
    assert prediction.shape == (2, 10, 15)
    assert unstack_frames(prediction, 3).shape == (2, 30, 5)


# -- configuration and presets -------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_construct(name):
    config = MockingjayConfig.preset(name)
    heads = {"tiny": 4, "demo": 48, "base": 36, "large": 144}[name]
    assert config.total_heads == heads
    if name in ("base", "large"):
        assert (config.hidden_size, config.intermediate_size) == (768, 3072)
        assert config.num_layers == {"base": 3, "large": 12}[name]
        return  # building them is slow-ish and adds nothing
    encoder = MockingjayEncoder(config)
    x = torch.randn(1, 5, config.step_input_dim)
    with torch.no_grad():
        out = encoder(x)
    assert len(out.attentions) == config.num_layers
    assert out.attentions[0].shape == (1, config.num_heads, 5, 5)


def test_config_s3prl_round_trip_and_yaml_strings():
    config = MockingjayConfig.preset("demo", pre_layer_norm=True, downsample_rate=3,
                                     input_dim=40)
    block = config.to_s3prl()
    assert block["num_hidden_layers"] == 4 and block["num_attention_heads"] == 12
    back = MockingjayConfig.from_s3prl(block, output_dim=config.output_dim)
    assert back == config.replace(max_input_length=0)
    yaml_like = dict(block, layer_norm_eps="1e-12", share_layer="False", input_dim=-1)
    parsed = MockingjayConfig.from_s3prl(yaml_like, input_dim=40)
    assert parsed.layer_norm_eps == 1e-12 and parsed.share_layer is False
    with pytest.raises(KeyError):
        MockingjayConfig.from_s3prl({k: v for k, v in block.items() if k != "hidden_size"})
    with pytest.raises(ValueError, match="multiple"):
        MockingjayConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="preset"):
        MockingjayConfig.preset("huge")
    assert MockingjayConfig.from_dict(config.to_dict()) == config


def test_state_dict_round_trip():
    config = _tiny(pre_layer_norm=True)
    a = MockingjayEncoder(config).eval()
    b = MockingjayEncoder(config).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x, lengths = _padded_batch(config)
    with torch.no_grad():
        assert _max_diff(a(x, lengths).hidden_states, b(x, lengths).hidden_states) == 0
    # s3prl's duplicated pre-LN names point at the same tensors.
    state = a.state_dict()
    assert torch.equal(state["encoder.layer.0.attention.LayerNorm.weight"],
                       state["encoder.layer.0.attention.output.LayerNorm.weight"])
    assert "encoder.LayerNorm.2.weight" in state


@pytest.mark.parametrize("pre_ln", [False, True])
def test_truncated_runs_give_the_same_maps_and_states(pre_ln):
    """num_layers / output_hidden_states=False skip work but change no number."""
    config = MockingjayConfig.preset("tiny", num_layers=3, pre_layer_norm=pre_ln)
    torch.manual_seed(0)
    encoder = MockingjayEncoder(config).eval()
    x = torch.randn(2, 17, config.step_input_dim)
    with torch.no_grad():
        full = encoder(x)
        maps_only = encoder(x, output_hidden_states=False, num_layers=2)
        two = encoder(x, num_layers=2)
    assert maps_only.hidden_states == () and len(maps_only.attentions) == 2
    for a, b in zip(full.attentions[:2], maps_only.attentions):
        assert torch.equal(a, b)
    assert len(two.hidden_states) == 3
    for a, b in zip(full.hidden_states[:2], two.hidden_states[:2]):
        assert torch.equal(a, b)
    if not pre_ln:  # post-LN: the state after layer 2 is the input of layer 3
        assert torch.equal(two.hidden_states[2], full.hidden_states[2])
