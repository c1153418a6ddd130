"""Plausible wrong answers to the deepnet-residual exercises (tests/test_exercises.py runs each against its check),
accepted alternative forms, and tests of the checks' own references."""

import copy

import torch


# -- deepnet-ex-lamb --------------------------------------------------------------------------------------------
def _lamb(stack, x, y, lr, step_of):
    stepped = copy.deepcopy(stack)
    before = stepped(x)
    (0.5 * (before - y).pow(2).sum(-1).mean()).backward()
    with torch.no_grad():
        for w in (stepped.w1, stepped.w2):
            w -= step_of(w, w.grad, lr)
        return float((stepped(x) - before).pow(2).sum(-1).mean().sqrt())


def _per_layer(w, g, lr):
    """LAMB's first step, layer by layer: lr ‖w_l‖ s/‖s‖ with s = sign(g_l)."""
    return torch.stack([lr * w[i].norm() * g[i].sign() / g[i].sign().norm() for i in range(w.shape[0])])


def _whole_tensor_norm(stack, x, y, lr):
    """The norms of the whole (L, d, d) tensors instead of each layer's (too large by about √L)."""
    return _lamb(stack, x, y, lr, lambda w, g, lr: lr * w.norm() * g.sign() / g.sign().norm())


def _no_sign_norm(stack, x, y, lr):
    """The 1/‖s‖ forgotten: each step's norm is η‖w_l‖‖sign g_l‖ ≈ η‖w_l‖√numel, not η‖w_l‖."""
    return _lamb(stack, x, y, lr, lambda w, g, lr: torch.stack([lr * w[i].norm() * g[i].sign()
                                                                for i in range(w.shape[0])]))


def _sqrt_numel(stack, x, y, lr):
    """1/√numel in place of LAMB's 1/‖sign g_l‖: the same where no gradient entry is 0, too small by
    √(share of non-zero entries) in a layer where ReLU leaves a row and a column of the gradient at 0."""
    return _lamb(stack, x, y, lr, lambda w, g, lr: torch.stack([lr * w[i].norm() * g[i].sign() / w[i].numel() ** 0.5
                                                                for i in range(w.shape[0])]))


def _adam_sign_step(stack, x, y, lr):
    """Adam's first step η sign(g): LAMB's trust ratio ‖w_l‖/‖sign g_l‖ left out."""
    return _lamb(stack, x, y, lr, lambda w, g, lr: lr * g.sign())


def _mean_not_rms(stack, x, y, lr):
    """The mean over samples of ‖ΔF‖ instead of the rms."""
    stepped = copy.deepcopy(stack)
    before = stepped(x)
    (0.5 * (before - y).pow(2).sum(-1).mean()).backward()
    with torch.no_grad():
        for w in (stepped.w1, stepped.w2):
            w -= _per_layer(w, w.grad, lr)
        return float((stepped(x) - before).norm(dim=-1).mean())


def _in_place(stack, x, y, lr):
    """The right number, but the step taken on the stack passed in (it must stay unchanged)."""
    before = stack(x)
    (0.5 * (before - y).pow(2).sum(-1).mean()).backward()
    with torch.no_grad():
        for w in (stack.w1, stack.w2):
            w -= _per_layer(w, w.grad, lr)
        return float((stack(x) - before).pow(2).sum(-1).mean().sqrt())


# -- deepnet-ex-gains -------------------------------------------------------------------------------------------
def _adam_like(model, windows, lr, trainable, step_of, select=True, reduce="rms"):
    stepped = copy.deepcopy(model)
    inputs, targets = windows[:, :-1], windows[:, 1:]
    before = stepped.features(inputs)
    torch.nn.functional.cross_entropy(stepped.head(before).flatten(0, 1), targets.flatten()).backward()
    with torch.no_grad():
        for name, p in stepped.named_parameters():
            if (trainable(name) or not select) and p.grad is not None:
                p -= step_of(p.grad, lr)
        change = (stepped.features(inputs) - before).pow(2).sum(-1)
        return float(change.mean().sqrt() if reduce == "rms" else change.sqrt().mean())


def _sgd_step(model, windows, lr, trainable):
    """An SGD step −η g instead of Adam's first step."""
    return _adam_like(model, windows, lr, trainable, lambda g, lr: lr * g)


def _trainable_ignored(model, windows, lr, trainable):
    """Every parameter stepped, whatever `trainable` says."""
    return _adam_like(model, windows, lr, trainable, lambda g, lr: lr * g / (g.abs() + 1e-8), select=False)


def _mean_of_norms(model, windows, lr, trainable):
    """The mean over positions of ‖ΔF‖ instead of the rms."""
    return _adam_like(model, windows, lr, trainable, lambda g, lr: lr * g / (g.abs() + 1e-8), reduce="mean")


# -- deepnet-ex-warmup ------------------------------------------------------------------------------------------
def _exit(losses, counts, tokens, window, margin, *, shift=0, use_margin=True, cumulative=False):
    log_p = (counts.double() / counts.sum()).log()
    threshold = float(-log_p[tokens].mean()) - (margin if use_margin else 0.0)
    for t in range(window, len(losses) + 1):
        part = losses[:t] if cumulative else losses[t - window:t]
        if sum(part) / len(part) < threshold:
            return t + shift
    return None


def _zero_based(losses, counts, tokens, window, margin):
    """The list index of the step (t − 1) instead of the step number."""
    return _exit(losses, counts, tokens, window, margin, shift=-1)


def _no_margin(losses, counts, tokens, window, margin):
    """Below the unigram loss at all, without the margin."""
    return _exit(losses, counts, tokens, window, margin, use_margin=False)


def _cumulative_mean(losses, counts, tokens, window, margin):
    """The mean of all losses so far instead of the last `window`."""
    return _exit(losses, counts, tokens, window, margin, cumulative=True)


def _bits(losses, counts, tokens, window, margin):
    """The unigram loss in bits (log₂) against losses in nats."""
    log_p = (counts.double() / counts.sum()).log2()
    threshold = float(-log_p[tokens].mean()) - margin
    for t in range(window, len(losses) + 1):
        if sum(losses[t - window:t]) / window < threshold:
            return t
    return None


WRONG_ANSWERS = {
    "deepnet-ex-lamb": {"whole-tensor norm": _whole_tensor_norm, "no 1/|s|": _no_sign_norm,
                        "1/sqrt(numel) for 1/|s|": _sqrt_numel, "Adam sign step": _adam_sign_step,
                        "mean not rms": _mean_not_rms, "stack changed": _in_place},
    "deepnet-ex-gains": {"SGD step": _sgd_step, "trainable ignored": _trainable_ignored,
                         "mean of norms": _mean_of_norms},
    "deepnet-ex-warmup": {"zero-based": _zero_based, "no margin": _no_margin, "cumulative mean": _cumulative_mean,
                          "bits": _bits},
}


def test_an_exact_sign_step_is_accepted_for_adams_first_step():
    """η·sign(g) differs from torch's η·g/(|g| + 1e-8) only where |g| is near 1e-8: the exercise calls the two
    the same step, so the check must accept both."""
    from kitlib.exercises import check_answer

    def sign_step(model, windows, lr, trainable):
        return _adam_like(model, windows, lr, trainable, lambda g, lr: lr * g.sign())

    assert check_answer("deepnet-ex-gains", sign_step)


def test_the_checks_leave_the_global_random_state_alone():
    from kitlib.exercises import get_exercise
    from kitlib.exercises.deepnet_residual import _language_models

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    for _ in _language_models("deepnet-ex-gains"):
        pass
    assert torch.equal(torch.random.get_rng_state(), state)
    assert get_exercise("deepnet-ex-gains").function == "first_adam_update"


def test_the_lamb_reference_steps_each_layer_by_eta_times_its_norm():
    """The step written out layer by layer, read back from the weights: ‖Δw_l‖ = η‖w_l‖ for every layer and
    matrix, also in a layer where ReLU leaves gradient entries at 0; and the reference's update (a tensor
    expression through functional_call) equals the update from those weights."""
    from kitlib.deepnorm import FFNStack
    from kitlib.exercises.deepnet_residual import _lamb_reference
    from kitlib.update_size import half_squared_error

    g = torch.Generator().manual_seed(0)
    stack = FFNStack(8, 3, "deepnorm", generator=g).double()
    x, y = torch.randn(2, 4, 8, generator=g, dtype=torch.float64)
    before = {k: v.clone() for k, v in stack.state_dict().items()}
    stepped = copy.deepcopy(stack)
    half_squared_error(stepped(x), y).backward()
    assert any((w.grad == 0).any() for w in (stepped.w1, stepped.w2))   # relu leaves some gradients at 0
    with torch.no_grad():
        for w in (stepped.w1, stepped.w2):
            w -= _per_layer(w, w.grad, 0.01)
    for old, new in ((stack.w1, stepped.w1), (stack.w2, stepped.w2)):
        for layer in range(3):
            assert torch.isclose((new[layer] - old[layer]).norm(), 0.01 * old[layer].norm(), rtol=1e-12)
    with torch.no_grad():
        update = float((stepped(x) - stack(x)).pow(2).sum(-1).mean().sqrt())
    assert abs(_lamb_reference(stack, x, y, 0.01) / update - 1) < 1e-12
    assert all(torch.equal(v, before[k]) for k, v in stack.state_dict().items())
    assert stack.w1.grad is None and stack.w2.grad is None


def test_the_gains_suggestion_separates_gains_from_biases():
    """The two selections the notes suggest: weight matrices plus the LayerNorm gains, and weight matrices plus
    the blocks' other biases — no embeddings, no LayerNorm bias in either."""
    from kitlib.tiny_transformers import TinyTransformerLM, is_weight_matrix

    names = [n for n, _ in TinyTransformerLM(11, 2, "su_adam", width=16, ffn_width=32, heads=2, context=12)
             .named_parameters()]
    gains = [n for n in names if is_weight_matrix(n) or n.endswith("ln_attn.weight") or n.endswith("ln_ffn.weight")]
    biases = [n for n in names
              if is_weight_matrix(n) or (n.startswith("blocks.") and n.endswith(".bias") and ".ln_" not in n)]
    matrices = {n for n in names if is_weight_matrix(n)}
    assert {n for n in gains if n not in matrices} == {f"blocks.{i}.ln_{s}.weight" for i in (0, 1)
                                                       for s in ("attn", "ffn")}
    assert {n for n in biases if n not in matrices} == {f"blocks.{i}.{p}.bias" for i in (0, 1)
                                                        for p in ("q", "k", "v", "o", "fc1", "fc2")}
