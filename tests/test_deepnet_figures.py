"""The functions chapter deepnet-residual added for the paper's Figs. 3(b) and 5, torchscale's initialisation,
the batched residual update (C2-04) and GAU's diagonal-to-off-diagonal ratio, each against an independent
computation (plain backward pass, a per-draw FFNStack step, a hand-written Adam step, closed-form
standard deviations, Monte Carlo)."""

import copy
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from kitlib.deepnorm import FFNStack, deepnorm_alpha_beta
from kitlib.gau import diagonal_to_offdiagonal, swish_moments
from kitlib.layer_gradients import block_gradient_norms, last_block_gradient_trace
from kitlib.sequence_batches import random_windows, translation_pairs
from kitlib.tiny_transformers import TinyTransformerLM, TinyTransformerSeq2Seq
from kitlib.torchscale_init import branch_weight_stds, torchscale_init_, torchscale_init_scales
from kitlib.transformer_training import early_update_table, next_token_loss, translation_loss
from kitlib.update_size import one_step_update, residual_update_draws


def test_block_gradient_norms_match_backward():
    torch.manual_seed(0)
    model = TinyTransformerSeq2Seq(32, 3, 2, "post_ln_init", context=16)
    source, target = translation_pairs(4, 15, 32, torch.Generator().manual_seed(0), torch.randperm(32))
    encoder, decoder = block_gradient_norms(translation_loss(model, source, target), model.encoder, model.decoder)
    translation_loss(model, source, target).backward()
    for stack, got in ((model.encoder, encoder), (model.decoder, decoder)):
        expected = [math.sqrt(sum(float(p.grad.pow(2).sum()) for n, p in block.named_parameters()
                                  if n.endswith("weight") and "ln_" not in n)) for block in stack]
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
        # including the LayerNorm gains (a plausible slip) changes the norms
        with_ln = [math.sqrt(sum(float(p.grad.pow(2).sum()) for n, p in block.named_parameters()
                                 if n.endswith("weight"))) for block in stack]
        assert not np.allclose(got.numpy(), with_ln, rtol=1e-3)


def test_residual_update_draws_match_one_stack_at_a_time():
    width, depth, draws, batch, lr = 16, 5, 3, 8, 1e-2
    got = residual_update_draws(width, depth, draws, lr, batch=batch, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)  # the same draws, in the same order
    w1 = torch.randn(draws, depth, width, width, generator=gen) * (2 / width) ** 0.5
    w2 = torch.randn(draws, depth, width, width, generator=gen) * (1 / width) ** 0.5
    x, y = torch.randn(draws, batch, width, generator=gen), torch.randn(draws, batch, width, generator=gen)
    for k in range(draws):
        stack = FFNStack(width, depth, "residual")
        stack.w1.data.copy_(w1[k])
        stack.w2.data.copy_(w2[k])
        assert got[k] == pytest.approx(one_step_update(stack, x[k], y[k], "sgd", lr)["update"], rel=1e-4)


def test_early_update_table_first_step_is_a_sign_step():
    tokens = torch.randint(0, 11, (2000,), generator=torch.Generator().manual_seed(0))
    table = early_update_table(tokens, 11, ["deepnorm"], [2], [4], steps=2, lr=1e-3, batch=4, length=8,
                               progress=False)
    assert table["deepnorm"].shape == (1, 1, 2)
    torch.manual_seed(4)  # rebuild the model, its first batch and the probe by hand
    model = TinyTransformerLM(11, 2, "deepnorm", context=8)
    batch = random_windows(tokens, 4, 8, torch.Generator().manual_seed(4))
    probe = random_windows(tokens, 4, 8, torch.Generator().manual_seed(20_004))[:, :-1]
    before = model.features(probe).detach()
    next_token_loss(model, batch).backward()
    with torch.no_grad():
        for p in model.parameters():  # Adam's first step: η g / (|g| + ε) with bias correction
            p -= 1e-3 * p.grad / (p.grad.abs() + 1e-8)
        expected = float((model.features(probe) - before).pow(2).sum(-1).mean().sqrt())
    assert table["deepnorm"][0, 0, 0] == pytest.approx(expected, rel=1e-3)


def test_torchscale_scales_against_the_paper():
    for n, m in ((6, 6), (18, 18), (100, 100)):
        scales = torchscale_init_scales(n, m)
        paper = deepnorm_alpha_beta(n, m)
        assert 1 / scales["decoder"] == pytest.approx(paper["decoder"][1], rel=1e-12)
        assert (1 / scales["encoder"]) / paper["encoder"][1] == pytest.approx(1.15 / 0.87, rel=1e-9)
    assert 1 / torchscale_init_scales(0, 12)["decoder"] == pytest.approx(deepnorm_alpha_beta(0, 12)["decoder"][1])


@pytest.mark.parametrize("attention_reset", [False, True])
def test_torchscale_init_standard_deviations(attention_reset):
    torch.manual_seed(0)
    width, ffn = 256, 512
    model = torchscale_init_(TinyTransformerSeq2Seq(8, 6, 6, "deepnorm", width=width, ffn_width=ffn, heads=2),
                             attention_reset=attention_reset)
    scale = torchscale_init_scales(6, 6)["encoder"]
    default = lambda fan_in: 1 / math.sqrt(3 * fan_in)  # noqa: E731  U(−1/√fan_in, 1/√fan_in)
    xavier_uniform = lambda gain: gain * math.sqrt(2 / (2 * width))  # noqa: E731
    expected = {"q": default(width), "k": default(width), "v": default(width) / scale,
                "o": default(width) / scale, "fc1": default(width) / scale, "fc2": default(ffn) / scale}
    if attention_reset:
        expected.update(q=xavier_uniform(2**-0.5), k=xavier_uniform(2**-0.5), v=xavier_uniform(2**-0.5) / scale,
                        o=xavier_uniform(1.0) / scale)
    got = branch_weight_stds(model.encoder[0])
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=0.03), name
    block = model.encoder[0]
    assert float(block.fc2.bias.detach().abs().max()) <= 1 / math.sqrt(ffn) / scale + 1e-7  # biases are divided too
    assert float(block.fc2.bias.detach().abs().max()) > 0.5 / math.sqrt(ffn) / scale
    assert model.encoder[0].alpha == deepnorm_alpha_beta(6, 6)["encoder"][0]  # α is the paper's
    # decoder block: self- and cross-attention value/output, and the FFN, divided by the decoder's (12M)^(1/4)
    dec_scale = torchscale_init_scales(6, 6)["decoder"]
    expected_dec = {"q": default(width), "cq": default(width), "ck": default(width), "v": default(width) / dec_scale,
                    "o": default(width) / dec_scale, "cv": default(width) / dec_scale,
                    "co": default(width) / dec_scale, "fc1": default(width) / dec_scale,
                    "fc2": default(ffn) / dec_scale}
    if attention_reset:
        expected_dec.update(q=xavier_uniform(2**-0.5), cq=xavier_uniform(2**-0.5), ck=xavier_uniform(2**-0.5),
                            v=xavier_uniform(2**-0.5) / dec_scale, cv=xavier_uniform(2**-0.5) / dec_scale,
                            o=xavier_uniform(1.0) / dec_scale, co=xavier_uniform(1.0) / dec_scale)
    got_dec = branch_weight_stds(model.decoder[0])
    for name, value in expected_dec.items():
        assert got_dec[name] == pytest.approx(value, rel=0.03), f"decoder {name}"
    assert dec_scale != pytest.approx(scale, rel=0.03)  # the encoder's divisor in the decoder would fail the above
    with pytest.raises(ValueError):
        torchscale_init_(TinyTransformerLM(8, 2, "post_ln"))


def test_diagonal_to_offdiagonal_against_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    s = 128
    z = F.silu(torch.randn(4000, s, generator=gen, dtype=torch.float64))
    diagonal = (z * z).sum(1).pow(2).mean()
    off = (z[:2000] * z[2000:]).sum(1).pow(2).mean()
    assert diagonal_to_offdiagonal(s) == pytest.approx(float(diagonal / off), rel=0.05)
    mean, second = swish_moments()
    assert abs(diagonal_to_offdiagonal(s) - second**2 / mean**4) > 15  # Su's ν⁴/μ⁴ drops the variance
    assert diagonal_to_offdiagonal(100_000) == pytest.approx(second**2 / mean**4, rel=0.01)


def test_last_block_gradient_trace_against_block_norms_and_a_hand_written_adam_step():
    """Step 0 is block_gradient_norms' last entry; step 1 is the last block's gradient norm after Adam's first
    step, θ − η g/(|g| + ε), written out by hand on a copy (a trace that forgot to step would repeat step 0)."""
    torch.manual_seed(0)
    model = TinyTransformerSeq2Seq(32, 2, 3, "post_ln", context=16)
    pair = translation_pairs(4, 15, 32, torch.Generator().manual_seed(0), torch.randperm(32))
    copy_ = copy.deepcopy(model)
    expected0 = float(block_gradient_norms(translation_loss(copy_, *pair), copy_.decoder)[0][-1])
    copy_.zero_grad()
    translation_loss(copy_, *pair).backward()
    with torch.no_grad():
        for p in copy_.parameters():
            p -= 1e-3 * p.grad / (p.grad.abs() + 1e-8)
    expected1 = float(block_gradient_norms(translation_loss(copy_, *pair), copy_.decoder)[0][-1])
    trace = last_block_gradient_trace(model, model.decoder, lambda: translation_loss(model, *pair), steps=2, lr=1e-3)
    assert len(trace) == 3
    assert trace[0] == pytest.approx(expected0, rel=1e-5)
    assert trace[1] == pytest.approx(expected1, rel=1e-3)
    assert abs(trace[1] - trace[0]) > 1e-3 * trace[0]
