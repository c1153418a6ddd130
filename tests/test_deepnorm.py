"""kitlib.deepnorm, kitlib.update_size, kitlib.tiny_transformers, kitlib.sequence_batches,
kitlib.transformer_training and kitlib.gau against the paper's table, closed forms and loops; and the identity
claims of chapter deepnet-residual (C2-01, C2-02, C2-09) failing on plausible wrong implementations."""

import copy
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from kitlib.deepnorm import (
    ARCHITECTURES,
    FFNStack,
    deepnorm_alpha_beta,
    encoder_decoder_coefficients,
    loglog_slope,
    paper_table_error,
    residual_jacobian_gain,
    su_alpha_lambda,
    su_table_error,
)
from kitlib.gau import diagonal_estimate, gau_forward, gau_output_ratio, swish_moments
from kitlib.sequence_batches import random_windows, translation_pairs
from kitlib.text import character_tokens, load_python_docs
from kitlib.tiny_transformers import TinyTransformerLM, TinyTransformerSeq2Seq, is_weight_matrix, multi_head_attention
from kitlib.transformer_training import (
    adam_with_warmup,
    train_language_model,
    train_translation,
    unigram_cross_entropy,
    warmup_lr,
)
from kitlib.update_size import (
    lm_one_step_update,
    lm_update_table,
    one_step_update,
    seq2seq_one_step_update,
    seq2seq_update_table,
    update_size_sweep,
)


# values worked out by hand from the paper's table (Wang et al. 2022, Fig. 2) — see the reference notes
@pytest.mark.parametrize("layers, alpha, beta", [(6, 1.8612, 0.3799), (18, 2.4495, 0.2887),
                                                 (100, 3.7606, 0.1880), (1000, 6.6874, 0.1057)])
def test_deepnorm_encoder_only_and_decoder_only(layers, alpha, beta):
    encoder = deepnorm_alpha_beta(layers, 0)
    decoder = deepnorm_alpha_beta(0, layers)
    assert encoder["decoder"] is None and decoder["encoder"] is None
    for a, b in (encoder["encoder"], decoder["decoder"]):
        assert a == pytest.approx(alpha, rel=1e-4) and b == pytest.approx(beta, rel=1e-3)
        assert b / a == pytest.approx(1 / math.sqrt(4 * layers), rel=1e-12)


def test_deepnorm_encoder_decoder():
    constants = deepnorm_alpha_beta(6, 6)
    assert constants["encoder"] == pytest.approx((1.4179, 0.4970), rel=1e-3)
    assert constants["decoder"] == pytest.approx((2.0598, 0.3433), rel=1e-3)
    # the paper's 0.81 and 0.87 are 27^{-1/16} and 27^{1/16}/√2 rounded (App. C)
    assert 27 ** (-1 / 16) == pytest.approx(0.81, abs=0.005)
    assert 27 ** (1 / 16) / math.sqrt(2) == pytest.approx(0.87, abs=0.005)


@pytest.mark.parametrize("bad", [(0, 0), (-1, 3), (float("nan"), 2), ("6", 0)])
def test_deepnorm_rejects_bad_layer_counts(bad):
    with pytest.raises(ValueError):
        deepnorm_alpha_beta(*bad)


@pytest.mark.parametrize("sublayers", [4, 36, 2000])
def test_su_constants_satisfy_their_conditions(sublayers):
    alpha, lam = su_alpha_lambda(sublayers, "sgd")
    assert lam / alpha == pytest.approx(sublayers**-0.5) and lam * alpha == pytest.approx(1)
    alpha, lam = su_alpha_lambda(sublayers, "adam")
    assert lam / alpha == pytest.approx(1 / sublayers) and lam * alpha == pytest.approx(1)
    alpha, lam = su_alpha_lambda(sublayers, "lamb")
    assert alpha == 1 and lam**2 / alpha == pytest.approx(1 / sublayers)
    with pytest.raises(ValueError, match="unknown optimiser"):
        su_alpha_lambda(sublayers, "rmsprop")


def test_plain_stack_preserves_norms_exactly():
    stack = FFNStack(16, 40, "plain", generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 16)
    assert torch.allclose(stack(x).norm(dim=-1), x.norm(dim=-1), rtol=1e-4)


def layer_norm_loop(h):
    return torch.stack([(row - row.mean()) / torch.sqrt(row.var(unbiased=False) + 1e-5) for row in h])


@pytest.mark.parametrize("architecture", sorted(set(ARCHITECTURES) - {"plain"}))
def test_stack_forward_matches_its_formula(architecture):
    depth, width = 6, 8
    stack = FFNStack(width, depth, architecture, generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, width)
    h = x.clone()
    for l in range(depth):
        branch = lambda t: torch.clamp(t @ stack.w1[l], min=0) @ stack.w2[l]  # noqa: E731
        if architecture == "residual":
            h = h + branch(h) / math.sqrt(depth)
        elif architecture == "post_ln":
            h = layer_norm_loop(h + branch(h))
        elif architecture == "pre_ln":
            h = h + branch(layer_norm_loop(h))
        elif architecture == "labml":
            h = layer_norm_loop(h + stack.alpha * branch(h))
        else:
            h = layer_norm_loop(stack.alpha * h + branch(h))
    if architecture == "pre_ln":
        h = layer_norm_loop(h)
    assert torch.allclose(stack(x), h, atol=1e-5)


def test_stack_initialisation_scales():
    depth, width = 64, 256
    gen = torch.Generator().manual_seed(2)
    alpha, beta = deepnorm_alpha_beta(depth / 2, 0)["encoder"]
    stack = FFNStack(width, depth, "deepnorm", generator=gen)
    assert stack.alpha == pytest.approx(alpha)
    assert float(stack.w1.detach().std()) == pytest.approx(beta * math.sqrt(2 / width), rel=0.01)
    assert float(stack.w2.detach().std()) == pytest.approx(beta * math.sqrt(1 / width), rel=0.01)
    with pytest.raises(ValueError, match="unknown architecture"):
        FFNStack(width, depth, "rezero")


def small_problem(seed, depth, architecture):
    """A float64 stack of width 8 with a batch of 6 inputs and targets."""
    gen = torch.Generator().manual_seed(seed)
    stack = FFNStack(8, depth, architecture, generator=gen).double()
    return stack, torch.randn(6, 8, generator=gen).double(), torch.randn(6, 8, generator=gen).double()


def test_one_step_sgd_matches_first_order_change_and_a_manual_step():
    stack, x, y = small_problem(3, 5, "post_ln")
    lr = 1e-6
    result = one_step_update(stack, x, y, "sgd", lr)
    # −η‖g‖² is the first-order change; the relative error is O(η)
    assert result["loss_change"] == pytest.approx(-lr * result["grad_sq"], rel=1e-3)
    # manual step with autograd
    params = list(stack.parameters())
    loss = 0.5 * (stack(x) - y).pow(2).sum(-1).mean()
    grads = torch.autograd.grad(loss, params)
    assert sum(float(g.pow(2).sum()) for g in grads) == pytest.approx(result["grad_sq"], rel=1e-10)
    before = stack(x).detach()
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= lr * g
        update = (stack(x) - before).pow(2).sum(-1).mean().sqrt()
    assert result["update"] == pytest.approx(float(update), rel=1e-6)


def test_first_adam_step_is_a_sign_step():
    stack, x, y = small_problem(4, 4, "deepnorm")
    lr = 1e-7
    result = one_step_update(stack, x, y, "adam", lr)
    # η g / (|g| + 1e-8) = η sign(g) up to the ε: the loss changes by −η‖g‖₁ to first order
    assert result["loss_change"] == pytest.approx(-lr * result["grad_l1"], rel=1e-3)
    with pytest.raises(ValueError, match="unknown optimiser"):
        one_step_update(stack, x, y, "lbfgs", lr)


def test_one_step_update_leaves_the_model_unchanged():
    stack = FFNStack(8, 3, "residual", generator=torch.Generator().manual_seed(5))
    before = [p.detach().clone() for p in stack.parameters()]
    one_step_update(stack, torch.randn(4, 8), torch.randn(4, 8), "sgd", 0.1)
    assert all(torch.equal(a, b) for a, b in zip(before, stack.parameters()))


def test_loglog_slope_of_a_power_law():
    x = np.array([4, 16, 64, 256])
    assert loglog_slope(x, 3 * x**0.5) == pytest.approx(0.5)
    assert loglog_slope(x, 2 / x) == pytest.approx(-1)


def test_residual_jacobian_gain_matches_the_full_jacobian():
    width, depth, eps = 6, 4, 0.5
    gain = residual_jacobian_gain(width, depth, eps, 3, generator=torch.Generator().manual_seed(6))
    # replay the same draws, then build the whole Jacobian of each sample with autograd.functional
    gen = torch.Generator().manual_seed(6)
    stack = FFNStack(width, depth, "residual", generator=gen)
    x = torch.randn(3, width, generator=gen)
    v = torch.randn(3, width, generator=gen)

    def network(sample):
        h = sample
        for l in range(depth):
            h = h + eps * stack.branch(h, l)
        return h

    for i in range(3):
        jacobian = torch.autograd.functional.jacobian(network, x[i])
        expected = (v[i] @ jacobian).pow(2).sum() / v[i].pow(2).sum()
        assert float(gain[i]) == pytest.approx(float(expected), rel=1e-5)


def test_swish_moments_against_monte_carlo():
    mean, second = swish_moments()
    x = torch.randn(4_000_000, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    s = F.silu(x)
    assert abs(mean - float(s.mean())) < 4 * float(s.std()) / 2000
    assert abs(second - float(s.pow(2).mean())) < 4 * float(s.pow(2).std()) / 2000
    assert diagonal_estimate(128, 512) == pytest.approx(128 * second**3 / 512)


def test_gau_forward_matches_a_loop_over_tokens():
    gen = torch.Generator().manual_seed(8)
    n, d, e, s = 5, 4, 6, 3
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w_u, w_v, w_o = (torch.randn(*shape, generator=gen, dtype=torch.float64)
                     for shape in ((d, e), (d, e), (e, d)))
    w_z = torch.randn(d, s, generator=gen, dtype=torch.float64)
    swish = lambda t: t / (1 + torch.exp(-t))  # noqa: E731
    rows = []
    for i in range(n):
        z_i = swish(x[i] @ w_z)
        mixed = sum(max(float(z_i @ swish(x[j] @ w_z)), 0.0) ** 2 / (n * s) * swish(x[j] @ w_v) for j in range(n))
        rows.append((swish(x[i] @ w_u) * mixed) @ w_o)
    assert torch.allclose(gau_forward(x, w_u, w_v, w_z, w_o), torch.stack(rows), atol=1e-10)
    ratio = gau_output_ratio(64, 32, 64, 16, generator=torch.Generator().manual_seed(0))
    assert 0 < ratio < 1
    # the diagonal and identity variants against the same loop with A replaced
    diagonal = torch.stack([(swish(x[i] @ w_u) * max(float(swish(x[i] @ w_z) @ swish(x[i] @ w_z)), 0.0) ** 2
                             / (n * s) * swish(x[i] @ w_v)) @ w_o for i in range(n)])
    assert torch.allclose(gau_forward(x, w_u, w_v, w_z, w_o, attention="diagonal"), diagonal, atol=1e-10)
    gated = torch.stack([(swish(x[i] @ w_u) * swish(x[i] @ w_v)) @ w_o for i in range(n)])
    assert torch.allclose(gau_forward(x, w_u, w_v, w_z, w_o, attention="identity"), gated, atol=1e-10)
    with pytest.raises(ValueError, match="unknown attention"):
        gau_forward(x, w_u, w_v, w_z, w_o, attention="softmax")


def test_transformer_is_causal_and_deepnorm_scales_the_right_weights():
    torch.manual_seed(0)
    model = TinyTransformerLM(20, 30, "deepnorm", width=64, ffn_width=128, heads=2, context=16)
    alpha, beta = deepnorm_alpha_beta(0, 30)["decoder"]
    assert model.alpha == pytest.approx(alpha)
    block = model.blocks[0]
    xavier = math.sqrt(2 / (64 + 64))
    assert float(block.q.weight.detach().std()) == pytest.approx(xavier, rel=0.05)
    assert float(block.v.weight.detach().std()) == pytest.approx(beta * xavier, rel=0.05)
    assert float(block.fc1.weight.detach().std()) == pytest.approx(beta * math.sqrt(2 / (64 + 128)), rel=0.05)
    tokens = torch.randint(0, 20, (2, 16))
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 20
    with torch.no_grad():
        assert torch.allclose(model(tokens)[:, :10], model(changed)[:, :10], atol=1e-5)
        assert not torch.allclose(model(tokens)[:, 10:], model(changed)[:, 10:])


def test_transformer_block_formula():
    torch.manual_seed(1)
    for norm in ("deepnorm", "scaled", "post_ln", "pre_ln"):
        model = TinyTransformerLM(10, 3, norm, context=8)
        block, x = model.blocks[0], torch.randn(2, 8, 64)
        with torch.no_grad():
            out = block(x)
            if norm == "deepnorm":
                h = block.ln_attn(model.alpha * x + block.attention(x))
                expected = block.ln_ffn(model.alpha * h + block.ffn(h))
            elif norm == "scaled":
                h = x + block.attention(x) / math.sqrt(6)
                expected = h + block.ffn(h) / math.sqrt(6)
            elif norm == "post_ln":
                h = block.ln_attn(x + block.attention(x))
                expected = block.ln_ffn(h + block.ffn(h))
            else:
                h = x + block.attention(block.ln_attn(x))
                expected = h + block.ffn(block.ln_ffn(h))
        assert torch.allclose(out, expected, atol=1e-5), norm


def test_language_model_training_lowers_the_loss_and_tracks_the_update():
    tokens, alphabet = character_tokens(load_python_docs()[:20000])
    assert "".join(alphabet[t] for t in tokens[:50].tolist()) == load_python_docs()[:50]
    torch.manual_seed(2)
    model = TinyTransformerLM(len(alphabet), 2, "pre_ln", context=16)
    gen = torch.Generator().manual_seed(2)
    probe = random_windows(tokens, 4, 16, torch.Generator().manual_seed(3))[:, :-1]
    history = train_language_model(model, tokens, steps=60, batch=8, length=16, lr=3e-3, warmup=5,
                                   generator=gen, probe=probe, progress=False)
    assert len(history["loss"]) == len(history["update"]) == 60 and history["diverged"] is None
    assert np.mean(history["loss"][-10:]) < history["loss"][0] - 0.5
    assert history["update"][0] > 0


def test_update_size_sweep_is_one_step_update_per_cell():
    sweep = update_size_sweep(["post_ln", "plain"], [3, 5], [11, 12], "sgd", 1e-2, width=8, batch=4,
                              progress=False)
    gen = torch.Generator().manual_seed(12)
    stack = FFNStack(8, 5, "plain", generator=gen)
    x, y = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    expected = one_step_update(stack, x, y, "sgd", 1e-2)
    assert sweep["plain"]["update"][1, 1] == pytest.approx(expected["update"], rel=1e-6)
    assert sweep["plain"]["grad_sq"][1, 1] == pytest.approx(expected["grad_sq"], rel=1e-6)
    assert sweep["post_ln"]["update"].shape == (2, 2)


def test_lm_one_step_update_matrices_only_moves_only_matrices():
    torch.manual_seed(3)
    model = TinyTransformerLM(12, 2, "deepnorm", context=8)
    windows = torch.randint(0, 12, (3, 9))
    names = [n for n, _ in model.named_parameters() if is_weight_matrix(n)]
    assert names and all(".ln_" not in n and n.startswith("blocks.") for n in names)
    assert {"blocks.0.q.weight", "blocks.0.fc2.weight"} <= set(names)
    everything = lm_one_step_update(model, windows, "adam", 1e-3)
    matrices = lm_one_step_update(model, windows, "adam", 1e-3, matrices_only=True)
    assert 0 < matrices["update"] < everything["update"]
    # Adam's first step moves every trained element by ≈ lr, so ‖Δθ‖₁ ≈ lr × (number of elements)
    assert matrices["grad_l1"] < everything["grad_l1"]


def _attention_loop(x, memory, block_q, block_k, block_v, block_o, heads, causal):
    """Multi-head attention written out per example, head and query position."""
    batch, n, width = x.shape
    size = width // heads
    q, k, v = block_q(x), block_k(memory), block_v(memory)
    out = torch.zeros(batch, n, width)
    for b in range(batch):
        for h in range(heads):
            cols = slice(h * size, (h + 1) * size)
            for i in range(n):
                visible = range(i + 1) if causal else range(memory.shape[1])
                scores = torch.stack([q[b, i, cols] @ k[b, j, cols] / math.sqrt(size) for j in visible])
                out[b, i, cols] = sum(w * v[b, j, cols] for w, j in zip(scores.softmax(0), visible))
    return block_o(out)


def test_encoder_decoder_blocks_against_loops_and_formulas():
    torch.manual_seed(2)
    model = TinyTransformerSeq2Seq(12, 3, 2, "deepnorm", width=16, ffn_width=32, heads=2, context=8)
    constants = deepnorm_alpha_beta(3, 2)
    assert model.encoder[0].alpha == pytest.approx(constants["encoder"][0])
    assert model.decoder[0].alpha == pytest.approx(constants["decoder"][0])
    block, x, memory = model.decoder[0], torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    with torch.no_grad():
        cross = multi_head_attention(x, memory, block.cq, block.ck, block.cv, block.co, 2, causal=False)
        torch.testing.assert_close(cross, _attention_loop(x, memory, block.cq, block.ck, block.cv, block.co, 2,
                                                          False), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(block.attention(x), _attention_loop(x, x, block.q, block.k, block.v, block.o,
                                                                      2, True), atol=1e-5, rtol=1e-4)
        alpha = block.alpha
        h = block.ln_attn(alpha * x + block.attention(x))
        h = block.ln_cross(alpha * h + multi_head_attention(h, memory, block.cq, block.ck, block.cv, block.co,
                                                            2, causal=False))
        expected = block.ln_ffn(alpha * h + block.ffn(h))
        torch.testing.assert_close(block(x, memory), expected, atol=1e-5, rtol=1e-5)


def test_encoder_decoder_init_masks_and_task():
    torch.manual_seed(3)
    deep = TinyTransformerSeq2Seq(20, 20, 20, "deepnorm", width=64, ffn_width=128, context=16)
    _, beta_d = deepnorm_alpha_beta(20, 20)["decoder"]
    xavier = math.sqrt(2 / (64 + 64))
    assert float(deep.decoder[0].cv.weight.detach().std()) == pytest.approx(beta_d * xavier, rel=0.05)
    assert float(deep.decoder[0].cq.weight.detach().std()) == pytest.approx(xavier, rel=0.05)
    torch.manual_seed(4)
    plain = TinyTransformerSeq2Seq(20, 4, 3, "post_ln", width=16, ffn_width=32, context=16)
    torch.manual_seed(4)
    scaled = TinyTransformerSeq2Seq(20, 4, 3, "post_ln_init", width=16, ffn_width=32, context=16)
    for blocks, scaled_blocks in ((plain.encoder, scaled.encoder), (plain.decoder, scaled.decoder)):
        for index, (a, b) in enumerate(zip(blocks, scaled_blocks)):
            k = len(blocks) - index
            torch.testing.assert_close(b.fc1.weight, a.fc1.weight / k)
            torch.testing.assert_close(b.q.weight, a.q.weight / k)
            torch.testing.assert_close(b.ln_ffn.weight, a.ln_ffn.weight)  # LayerNorm gains untouched
    source = torch.randint(1, 20, (2, 8))
    target = torch.randint(1, 20, (2, 8))
    with torch.no_grad():
        changed_target = target.clone()
        changed_target[:, 5:] = (changed_target[:, 5:] + 1) % 20
        assert torch.allclose(plain(source, target)[:, :5], plain(source, changed_target)[:, :5], atol=1e-5)
        changed_source = source.clone()
        changed_source[:, -1] = (changed_source[:, -1] + 1) % 20
        assert not torch.allclose(plain.encode(source)[:, 0], plain.encode(changed_source)[:, 0])
    permutation = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    src, tgt = translation_pairs(5, 6, 20, torch.Generator().manual_seed(1), permutation)
    assert (tgt[:, 0] == 0).all() and src.min() >= 1
    assert all(tgt[i, 1 + j] == permutation[src[i, 5 - j]] for i in range(5) for j in range(6))


def test_translation_training_learns_and_one_step_steps_only_block_matrices():
    permutation = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    model = TinyTransformerSeq2Seq(12, 2, 2, "pre_ln", width=32, ffn_width=64, context=8)
    history = train_translation(model, steps=150, batch=32, length=5, vocabulary=12, lr=3e-3,
                                generator=torch.Generator().manual_seed(1), permutation=permutation,
                                progress=False)
    assert history["diverged"] is None and history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"] > 0.5  # chance is 1/11
    src, tgt = translation_pairs(4, 5, 12, torch.Generator().manual_seed(2), permutation)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = seq2seq_one_step_update(model, src, tgt, "sgd", 0.1, matrices_only=True)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name])  # one_step_update restores the model
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(src, tgt[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten()).backward()
    matrices = [p for n, p in model.named_parameters()
                if n.startswith(("encoder.", "decoder.")) and n.endswith(".weight") and ".ln_" not in n]
    assert len(matrices) == 2 * 6 + 2 * 10  # encoder q k v o fc1 fc2; decoder also cq ck cv co
    assert step["grad_sq"] == pytest.approx(sum(float(p.grad.pow(2).sum()) for p in matrices), rel=1e-5)
    assert step["update"] > 0 and step["loss_change"] < 0


# -- identity claims of the chapter: each fails on a plausible wrong implementation ----------------------------
def test_c2_01_tolerance_catches_wrong_constants():
    """C2-01 (≤ 1e-3): the implementation passes; Su's SGD exponents in place of the paper's (β = (8N)^{-1/2}),
    an encoder-decoder with the decoder-only formula, and Su's Adam row with the SGD exponents all fail."""
    assert paper_table_error() <= 1e-3 and su_table_error() <= 1e-3

    def wrong_beta(n, m):
        right = deepnorm_alpha_beta(n, m)
        return {side: None if ab is None else (ab[0], ab[1] ** 2) for side, ab in right.items()}

    def decoder_only_everywhere(n, m):
        right = deepnorm_alpha_beta(n, m)
        if n and m:
            right["decoder"] = ((2 * m) ** 0.25, (8 * m) ** -0.25)
        return right

    assert paper_table_error(wrong_beta) > 1e-3
    assert paper_table_error(decoder_only_everywhere) > 1e-3
    assert su_table_error(lambda s, name: su_alpha_lambda(s, "sgd" if name == "adam" else name)) > 1e-3


def test_c2_02_tolerances_catch_swapped_or_su_constants():
    """C2-02: β/α·√(4N) − 1 ≤ 1e-12 and both coefficients within 0.005 of 27^{∓1/16}(·1/√2); swapping 0.81 and
    0.87 (a plausible typo), or torchscale's 1.15 for 0.87, breaks the 0.005; Su's SGD constants break the ratio."""
    assert max(encoder_decoder_coefficients()) <= 0.005

    def swapped(n, m):
        scale = (n**4 * m) ** (1 / 16)
        return {"encoder": (0.87 * scale, 0.81 / scale), "decoder": deepnorm_alpha_beta(n, m)["decoder"]}

    def torchscale(n, m):
        scale = (n**4 * m) ** (1 / 16)
        return {"encoder": (0.81 * scale, 1.15 / scale), "decoder": deepnorm_alpha_beta(n, m)["decoder"]}

    assert max(encoder_decoder_coefficients(swapped)) > 0.005
    assert encoder_decoder_coefficients(torchscale)[1] > 0.005
    alpha, beta = su_alpha_lambda(2 * 6, "sgd")
    assert abs(beta / alpha * math.sqrt(4 * 6) - 1) > 1e-12


def test_c2_09_tolerance_catches_a_wrong_activation():
    """C2-09 (μ, ν² to ±1e-4 of the post's 0.2066, 0.3557): swish passes; GELU's sigmoid approximation
    x σ(1.702 x), the sigmoid itself, and swish moments without the 1/√(2π) all fail."""
    from scipy.special import expit

    mu, nu_sq = swish_moments()
    assert abs(mu - 0.2066) <= 1e-4 and abs(nu_sq - 0.3557) <= 1e-4
    for wrong in (lambda x: x * expit(1.702 * x), expit):
        w_mu, w_nu = swish_moments(wrong)
        assert abs(w_mu - 0.2066) > 1e-4 or abs(w_nu - 0.3557) > 1e-4
    assert abs(mu * math.sqrt(2 * math.pi) - 0.2066) > 1e-4


# -- kitlib functions added for the chapter ----------------------------------------------------------------
def test_lm_update_table_is_lm_one_step_update_per_cell():
    tokens = torch.randint(0, 11, (500,), generator=torch.Generator().manual_seed(0))
    panels = [("sgd", 1e-2, True), ("adam", 1e-4, False)]
    table = lm_update_table(tokens, 11, ["deepnorm", "post_ln"], [1, 2], [5, 6], panels, length=8, progress=False)
    assert table["sgd", True, "deepnorm"].shape == (2, 2) and set(table) == {
        (o, m, n) for o, _, m in panels for n in ("deepnorm", "post_ln")}
    torch.manual_seed(6)
    model = TinyTransformerLM(11, 2, "post_ln", context=8)
    windows = random_windows(tokens, 8, 8, torch.Generator().manual_seed(6))
    expected = lm_one_step_update(model, windows, "adam", 1e-4, matrices_only=False)["update"]
    assert table["adam", False, "post_ln"][1, 1] == pytest.approx(expected, rel=1e-5)


def test_seq2seq_update_table_is_seq2seq_one_step_update_per_cell():
    permutation = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    table = seq2seq_update_table(["post_ln_init"], [1, 2], [3], permutation, vocabulary=10, length=5, batch=4)
    torch.manual_seed(3)
    model = TinyTransformerSeq2Seq(10, 2, 2, "post_ln_init", context=6)
    source, target = translation_pairs(4, 5, 10, torch.Generator().manual_seed(3), permutation)
    expected = seq2seq_one_step_update(model, source, target, "sgd", 1e-2, matrices_only=True)["update"]
    assert table["post_ln_init"][1, 0] == pytest.approx(expected, rel=1e-5)


def test_unigram_cross_entropy_against_a_loop():
    counts = torch.tensor([5, 3, 2])
    targets = torch.tensor([[0, 2], [1, 0]])
    expected = -sum(math.log(counts[t].item() / 10) for t in targets.flatten().tolist()) / 4
    assert unigram_cross_entropy(counts, targets) == pytest.approx(expected, rel=1e-12)
    # on the text it was counted from, it is the entropy of the frequencies
    p = counts.double() / counts.sum()
    text = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    assert unigram_cross_entropy(counts, text) == pytest.approx(float(-(p * p.log()).sum()), rel=1e-12)


def test_warmup_schedule_and_divergence_is_recorded_not_raised():
    assert [warmup_lr(1.0, t, 4) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_lr(0.3, 0, 0) == 0.3
    model = torch.nn.Linear(3, 1)
    losses = iter([1.0, 2.0, float("nan"), 3.0])
    history = adam_with_warmup(model, lambda: None,
                               lambda _: model.weight.sum() * 0 + torch.tensor(next(losses)), steps=4, lr=1e-2,
                               progress=False)
    assert history["diverged"] == 2 and history["loss"] == [1.0, 2.0]


def test_fused_adam_loop_matches_plain_adam():
    """adam_with_warmup's fused Adam (CPU) takes the same steps as torch's default Adam with the same warm-up."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    reference = copy.deepcopy(model)
    data = [torch.randn(5, 4, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    batches = iter(data)
    adam_with_warmup(model, lambda: next(batches), lambda x: model(x).pow(2).mean(), steps=6, lr=1e-2, warmup=3,
                     progress=False)
    optimiser = torch.optim.Adam(reference.parameters(), lr=1e-2, betas=(0.9, 0.98))
    for step, x in enumerate(data):
        optimiser.param_groups[0]["lr"] = warmup_lr(1e-2, step, 3)
        optimiser.zero_grad()
        reference(x).pow(2).mean().backward()
        optimiser.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_residual_jacobian_gain_in_float64_matches_float32():
    gain32 = residual_jacobian_gain(8, 5, 0.4, 4, generator=torch.Generator().manual_seed(9))
    gain64 = residual_jacobian_gain(8, 5, 0.4, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert gain64.dtype == torch.float64
    torch.testing.assert_close(gain64.float(), gain32, rtol=1e-4, atol=1e-6)
