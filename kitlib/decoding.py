"""Batched decoding of autoregressive language models: greedy, beam search, ancestral / top-k / nucleus
sampling and their consistent variants (Welleck et al. 2020).

A model is decoded through two methods (``kitlib.language_model`` has a recurrent LM and an exact toy)::

    log_probs, state = model.start(prefixes)      # prefixes (B, k) → log p(y_1 | prefix), (B, V)
    log_probs, state = model.step(tokens, state)  # tokens (B,) → log p(y_{t+1} | prefix, y_{≤t})

where ``state`` is a tuple of tensors whose first dimension is the batch, and ``model.eos_id`` names the
end-of-sequence token. Every decoder works on the whole batch at once, drops a sequence from the batch as soon
as it has stopped, and stops when all have stopped or ``max_len`` tokens were generated. A sequence that has
not emitted eos after ``max_len`` tokens is *non-terminated*; the non-termination ratio is
$r_L=\\frac1B\\,\\#\\{\\text{non-terminated}\\}$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch


def filter_candidates(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None,
                      eos_id: int | None = None) -> torch.Tensor:
    """Boolean mask (shape of ``logits``) of the tokens a top-k and/or nucleus step may choose from.

    top-k keeps the ``top_k`` highest logits. Nucleus keeps the smallest set of highest-probability tokens
    whose total probability reaches ``top_p``: token $i$ in decreasing order is kept when the mass before it
    is below ``top_p``, so the first token that crosses the threshold is kept. With both, nucleus acts on the
    distribution renormalised over the top-k set (the order of the usual ``top_k_top_p_filtering``). With
    ``eos_id``, eos is always a candidate: the *consistent* variant (the paper's definition of consistent
    top-k / nucleus sampling).
    With neither ``top_k`` nor ``top_p`` every token is a candidate (ancestral sampling)."""
    vocab = logits.shape[-1]
    keep = torch.ones_like(logits, dtype=torch.bool)
    if top_k is not None:
        if not 1 <= int(top_k) <= vocab:
            raise ValueError(f"top_k must be between 1 and the vocabulary size {vocab}, got {top_k}")
        kept = logits.topk(int(top_k), dim=-1).indices
        keep = torch.zeros_like(keep).scatter_(-1, kept, True)
    if top_p is not None:
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        probs = logits.masked_fill(~keep, -math.inf).softmax(-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        keep_sorted = mass_before < top_p
        keep_sorted[..., 0] = True
        keep = keep & torch.zeros_like(keep).scatter_(-1, order, keep_sorted)
    if eos_id is not None:
        keep[..., eos_id] = True
    return keep


@dataclass
class Decoded:
    """Output of a decoder for B prefixes: generated tokens (B, max_len), right-padded with -1; the number of
    generated tokens including eos (``max_len`` when non-terminated); whether eos was emitted."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    terminated: torch.Tensor

    @property
    def nontermination_ratio(self) -> float:
        return float((~self.terminated).float().mean())

    def survival(self, steps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Empirical P(length > t) for t = 0 … max_len (non-terminated sequences count as longer than all)."""
        max_len = self.tokens.shape[1]
        steps = torch.arange(max_len + 1) if steps is None else steps
        lengths = torch.where(self.terminated, self.lengths, max_len + 1).cpu()
        return steps, (lengths[None, :] > steps[:, None]).float().mean(1)


def _select(state: tuple, index: torch.Tensor) -> tuple:
    return tuple(s[index] for s in state)


def _decode_token_by_token(model, prefixes: torch.Tensor, max_len: int, choose, compact_every: int = 1) -> Decoded:
    """Shared loop of greedy and sampling: ``choose(log_probs)`` picks one token per row. With
    ``compact_every`` = k > 1 see ``_decode_compacting_every``."""
    if compact_every != 1:
        return _decode_compacting_every(model, prefixes, max_len, choose, compact_every)
    batch = prefixes.shape[0]
    tokens = torch.full((batch, max_len), -1, dtype=torch.long, device=prefixes.device)
    lengths = torch.full((batch,), max_len, dtype=torch.long, device=prefixes.device)
    terminated = torch.zeros(batch, dtype=torch.bool, device=prefixes.device)
    active = torch.arange(batch, device=prefixes.device)
    log_probs, state = model.start(prefixes)
    for t in range(max_len):
        chosen = choose(log_probs)
        tokens[active, t] = chosen
        stopped = chosen == model.eos_id
        if stopped.any():
            lengths[active[stopped]] = t + 1
            terminated[active[stopped]] = True
            going = ~stopped
            active, chosen, state = active[going], chosen[going], _select(state, going)
        if active.numel() == 0 or t == max_len - 1:
            break
        log_probs, state = model.step(chosen, state)
    return Decoded(tokens, lengths, terminated)


def _decode_compacting_every(model, prefixes: torch.Tensor, max_len: int, choose, every: int) -> Decoded:
    """The loop of ``_decode_token_by_token`` without a host synchronisation at every step: a row that has
    emitted eos stays in the batch (its further tokens are discarded, its length and flag set by tensor
    operations only) and finished rows are dropped, and the loop left, only every ``every`` steps. On a GPU
    the host then never waits for a step it has just queued; the price is up to ``every`` − 1 wasted steps
    per finished row. Greedy output is identical to ``every`` = 1; a sampler draws other random numbers
    (the batch has another shape), so its samples differ but follow the same law."""
    if every < 1:
        raise ValueError(f"compact_every must be at least 1, got {every}")
    batch, device = prefixes.shape[0], prefixes.device
    tokens = torch.full((batch, max_len), -1, dtype=torch.long, device=device)
    lengths = torch.full((batch,), max_len, dtype=torch.long, device=device)
    terminated = torch.zeros(batch, dtype=torch.bool, device=device)
    active = torch.arange(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    log_probs, state = model.start(prefixes)
    for t in range(max_len):
        chosen = choose(log_probs)
        tokens[active, t] = torch.where(done, -1, chosen)
        newly = (chosen == model.eos_id) & ~done
        lengths[active] = torch.where(newly, t + 1, lengths[active])
        terminated[active] = terminated[active] | newly
        done = done | newly
        if t == max_len - 1:
            break
        if (t + 1) % every == 0:  # the only host synchronisation: every `every` steps
            going = (~done).nonzero().flatten()
            if going.numel() == 0:
                break
            active, chosen, done, state = active[going], chosen[going], done[going], _select(state, going)
        log_probs, state = model.step(chosen, state)
    return Decoded(tokens, lengths, terminated)


def greedy(model, prefixes: torch.Tensor, max_len: int, compact_every: int = 1) -> Decoded:
    """Greedy decoding: $y_t=\\arg\\max_v p(v\\mid y_{<t})$. ``compact_every`` = k > 1 drops finished rows
    only every k steps (no host synchronisation in between; same tokens)."""
    return _decode_token_by_token(model, prefixes, max_len, lambda log_probs: log_probs.argmax(-1), compact_every)


def sample(model, prefixes: torch.Tensor, max_len: int, top_k: int | None = None, top_p: float | None = None,
           consistent: bool = False, generator: torch.Generator | None = None, compact_every: int = 1) -> Decoded:
    """Ancestral sampling from $p$ restricted to ``filter_candidates`` and renormalised (Gumbel-max:
    $\\arg\\max_v\\,[\\log p_v+G_v]$ over the candidates, $G_v$ standard Gumbel, is a draw from that
    distribution). ``consistent`` keeps eos among the candidates. ``compact_every`` as in ``greedy``."""

    def choose(log_probs):
        keep = filter_candidates(log_probs, top_k, top_p, model.eos_id if consistent else None)
        uniform = torch.rand(log_probs.shape, generator=generator, device=log_probs.device,
                             dtype=log_probs.dtype).clamp_(min=torch.finfo(log_probs.dtype).tiny)
        gumbel = -torch.log(-torch.log(uniform))
        return (log_probs + gumbel).masked_fill(~keep, -math.inf).argmax(-1)

    return _decode_token_by_token(model, prefixes, max_len, choose, compact_every)


def beam_search(model, prefixes: torch.Tensor, max_len: int, beam_size: int, stop: str = "best") -> Decoded:
    """Beam search on the sum of log-probabilities.

    ``stop="best"``: finished hypotheses (ending in eos) stay in the beam with their score frozen; unfinished
    scores can only fall, so a prefix stops as soon as its best-scoring hypothesis is finished, and that
    hypothesis is the answer. If the best hypothesis is unfinished after ``max_len`` tokens the decode is
    non-terminated.

    ``stop="first"``: the rule of the official evaluation (``decode_dataset`` in uralik/consistency-lm): a
    prefix stops at the first step at which any of its ``beam_size`` hypotheses emits eos, and the answer is
    the best-scoring hypothesis finished at that step; it is non-terminated only if no hypothesis in its beam
    ever emitted eos within ``max_len`` tokens. Every prefix that stops under "best" has a finished
    hypothesis by then, so r_L("first") ≤ r_L("best"). (The official loop keeps decoding a mini-batch of 32
    until every item has a finished hypothesis and then returns each item's best finished one: the same
    terminated set, possibly another, later finished answer.)

    Back-pointers are stored per step and followed once at the end (linear, not quadratic, in length)."""
    if stop not in ("best", "first"):
        raise ValueError(f"stop must be 'best' or 'first', got {stop!r}")
    batch, k = prefixes.shape[0], beam_size
    device = prefixes.device
    back = torch.zeros(batch, k, max_len, dtype=torch.long, device=device)
    emitted = torch.full((batch, k, max_len), -1, dtype=torch.long, device=device)
    last_step = torch.full((batch,), max_len - 1, dtype=torch.long, device=device)
    final_beam = torch.zeros(batch, dtype=torch.long, device=device)
    terminated = torch.zeros(batch, dtype=torch.bool, device=device)
    active = torch.arange(batch, device=device)
    log_probs, state = model.start(prefixes)
    vocab = log_probs.shape[-1]
    log_probs = log_probs.repeat_interleave(k, 0)
    state = _select(state, torch.arange(batch, device=device).repeat_interleave(k))
    scores = torch.full((batch, k), -math.inf, device=device, dtype=log_probs.dtype)
    scores[:, 0] = 0.0  # all beams start as copies of one: only the first may expand at step 0
    finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
    eos_only = torch.full((vocab,), -math.inf, device=device, dtype=log_probs.dtype)
    eos_only[model.eos_id] = 0.0
    for t in range(max_len):
        n = active.numel()
        step_scores = torch.where(finished[..., None], eos_only, log_probs.view(n, k, vocab))
        candidates = (scores[..., None] + step_scores).view(n, k * vocab)
        scores, flat = candidates.topk(k, dim=-1)
        origin, chosen = flat // vocab, flat % vocab
        rows = torch.arange(n, device=device)[:, None]
        was_finished = finished[rows, origin]
        finished = was_finished | (chosen == model.eos_id)
        back[active, :, t] = origin
        emitted[active, :, t] = torch.where(was_finished, -1, chosen)  # a frozen hypothesis emits nothing
        state = _select(state, (rows * k + origin).view(-1))
        if stop == "best":
            done = finished[:, 0]
        else:  # the first hypothesis that ends now (scores are sorted, so the best of them)
            ends_now = finished & ~was_finished
            done = ends_now.any(-1)
            final_beam[active[done]] = ends_now[done].float().argmax(-1)
        if done.any():
            last_step[active[done]] = t
            terminated[active[done]] = True
            going = ~done
            active, scores, finished, chosen = active[going], scores[going], finished[going], chosen[going]
            state = _select(state, going.repeat_interleave(k))
        if active.numel() == 0 or t == max_len - 1:
            break
        log_probs, state = model.step(chosen.view(-1), state)
    tokens = torch.full((batch, max_len), -1, dtype=torch.long, device=device)
    beam = final_beam.clone()
    rows = torch.arange(batch, device=device)
    for t in range(int(last_step.max()), -1, -1):  # follow the best hypothesis back to step 0
        on = t <= last_step
        tokens[on, t] = emitted[rows[on], beam[on], t]
        beam[on] = back[rows[on], beam[on], t]
    return Decoded(tokens, (tokens >= 0).sum(-1), terminated)


# The paper's decoders (as in evaluate.py of uralik/consistency-lm), by the names the book uses.
DECODERS = {
    "greedy": greedy,
    "beam-2": partial(beam_search, beam_size=2),
    "beam-4": partial(beam_search, beam_size=4),
    "ancestral": sample,
    "top-2": partial(sample, top_k=2),
    "top-4": partial(sample, top_k=4),
    "nucleus-0.2": partial(sample, top_p=0.2),
    "nucleus-0.4": partial(sample, top_p=0.4),
    "consistent top-2": partial(sample, top_k=2, consistent=True),
    "consistent top-4": partial(sample, top_k=4, consistent=True),
    "consistent nucleus-0.2": partial(sample, top_p=0.2, consistent=True),
    "consistent nucleus-0.4": partial(sample, top_p=0.4, consistent=True),
}
STOCHASTIC = {name for name in DECODERS if name not in ("greedy", "beam-2", "beam-4")}
# Beam search with the official evaluation's stopping rule (see ``beam_search``); ``decode`` accepts these too.
OFFICIAL_BEAM = {
    "beam-2 (first finished)": partial(beam_search, beam_size=2, stop="first"),
    "beam-4 (first finished)": partial(beam_search, beam_size=4, stop="first"),
}


def decode(name: str, model, prefixes: torch.Tensor, max_len: int,
           generator: torch.Generator | None = None) -> Decoded:
    """Run the decoder called ``name`` (a key of ``DECODERS`` or ``OFFICIAL_BEAM``)."""
    if name not in DECODERS and name not in OFFICIAL_BEAM:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(list(DECODERS) + list(OFFICIAL_BEAM))}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    if name in STOCHASTIC:
        return DECODERS[name](model, prefixes, max_len, generator=generator)
    return {**DECODERS, **OFFICIAL_BEAM}[name](model, prefixes, max_len)


@torch.no_grad()
def decode_prefix_sets(model, prefix_sets: dict[str, torch.Tensor], names, max_len: int,
                       generator: torch.Generator | None = None) -> dict[tuple[str, str], Decoded]:
    """Every decoder in ``names`` on every named prefix set (each (B, k)): {(set name, decoder name): Decoded}.
    Used by seq2seq-stop (§5, the paper's decoders)."""
    return {(set_name, name): decode(name, model, prefixes, max_len, generator)
            for set_name, prefixes in prefix_sets.items() for name in names}


def decoder_options(name: str) -> dict:
    """The candidate-set options (``top_k``, ``top_p``, ``consistent``) of a sampling decoder of ``DECODERS``
    ({} for ancestral sampling); an error for greedy and beam search, which do not sample."""
    if name not in STOCHASTIC:
        raise ValueError(f"{name!r} is not a sampling decoder; choose one of {', '.join(sorted(STOCHASTIC))}")
    return dict(getattr(DECODERS[name], "keywords", {}))


def stop_probability(logits: torch.Tensor, eos_id: int, top_k: int | None = None, top_p: float | None = None,
                     consistent: bool = False) -> torch.Tensor:
    """Probability that one step of a sampling decoder emits eos: $p$ renormalised over the candidate set
    $V_t$ of ``filter_candidates``,

    $$q=\\frac{p_\\mathrm{eos}\\,[\\mathrm{eos}\\in V_t]}{\\sum_{v\\in V_t}p_v},\\qquad p=\\mathrm{softmax}(z).$$

    For a consistent decoder $\\mathrm{eos}\\in V_t$, so $q\\ge p_\\mathrm{eos}\\ge e^{-2B}/|V|$ when $|z_v|\\le B$
    (the paper's argument for consistent sampling); on a model whose logits do not change, the length is
    geometric with mean $1/q$. logits (..., V) → (...). Used by seq2seq-stop (S2, S3)."""
    keep = filter_candidates(logits, top_k, top_p, eos_id if consistent else None)
    probs = logits.softmax(-1).masked_fill(~keep, 0.0)
    return probs[..., eos_id] / probs.sum(-1)


def geometric_length_gap(decoded: Decoded, q: float) -> float:
    """$|\\bar n-1/q|\\,/\\,\\mathrm{SE}$: how many standard errors the mean decoded length $\\bar n$ of $B$
    sequences lies from the mean $1/q$ of a geometric law with per-step stopping probability $q$, where
    $\\mathrm{SE}=\\sqrt{1-q}/(q\\sqrt B)$ (the standard deviation of a geometric length over $\\sqrt B$).
    Non-terminated sequences count with length ``max_len``, so a decoder that never stops lies far off.
    Used by seq2seq-stop (S2)."""
    q = float(q)
    if not 0 < q <= 1:
        raise ValueError(f"the stopping probability must be in (0, 1], got {q}")
    lengths = decoded.lengths.double()
    standard_error = math.sqrt(1 - q) / q / math.sqrt(len(lengths))
    if standard_error == 0:
        return 0.0 if bool((lengths == 1).all()) else math.inf
    return abs(float(lengths.mean()) - 1 / q) / standard_error


@torch.no_grad()
def eos_probabilities(model, prefixes: torch.Tensor, decoded: Decoded) -> torch.Tensor:
    """p(eos) at every step of already decoded sequences, by feeding their tokens back through
    ``start``/``step`` (teacher forcing): (B, max_len), NaN after a sequence's end."""
    max_len = decoded.tokens.shape[1]
    out = torch.full(decoded.tokens.shape, math.nan, device=prefixes.device)
    log_probs, state = model.start(prefixes)
    for t in range(max_len):
        out[:, t] = log_probs[:, model.eos_id].exp()
        if t == max_len - 1:
            break
        log_probs, state = model.step(decoded.tokens[:, t].clamp(min=0), state)
    steps = torch.arange(max_len, device=prefixes.device)
    return out.masked_fill(steps[None, :] >= decoded.lengths[:, None], math.nan)


def ngram_repetition(decoded: Decoded, n: int = 4) -> torch.Tensor:
    """Per sequence, 1 − (distinct n-grams)/(n-grams) of the generated tokens (eos excluded): the official
    ``repeat-4`` task loss of MGS (0 when a continuation is shorter than n + 1 tokens)."""
    rates = []
    for row, length, ended in zip(decoded.tokens.tolist(), decoded.lengths.tolist(), decoded.terminated.tolist()):
        tokens = row[: length - 1] if ended else row[:length]
        grams = [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]
        rates.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
    return torch.tensor(rates)


def wilson_interval(count: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion $\\hat p=k/n$: the $p$ with
    $|\\hat p-p|\\le z\\sqrt{p(1-p)/n}$,

    $$\\frac{\\hat p+\\frac{z^2}{2n}\\pm z\\sqrt{\\frac{\\hat p(1-\\hat p)}{n}+\\frac{z^2}{4n^2}}}{1+\\frac{z^2}{n}}.$$

    Its lower end is 0 exactly when $k=0$ and positive otherwise. Used by seq2seq-stop (S10) with $k$ the
    sum over prefixes of each prefix's mean loop indicator over snapshots (a fractional count; the interval is
    then conservative, since a mean of indicators in $[0,1]$ has variance at most $p(1-p)$)."""
    if total < 1 or not 0 <= count <= total:
        raise ValueError(f"need 0 <= count <= total and total >= 1, got {count} of {total}")
    if count == 0:  # the formula's lower end is exactly 0 here; avoid a rounding residue of 1e-17
        return 0.0, min(1.0, (z * z / total) / (1 + z * z / total))
    p, n = count / total, total
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def st_forced_cost(lengths, epsilon: float) -> float:
    """Relative perplexity increase that the ST layer's floor forces on held-out text (seq2seq-stop, S11).

    An ST model gives a word at continuation step $t$ at most the mass $\\prod_{i\\le t}\\beta_i\\le
    (1-\\varepsilon)^t$ left over by eos; a model sitting on its floor pays $-t\\ln(1-\\varepsilon)$ nats on that
    word. A sentence whose continuation has ``n`` tokens (the last one eos; words at steps $1,\\dots,n-1$) pays
    $-\\ln(1-\\varepsilon)\\,\\frac{(n-1)n}{2}$ nats; over held-out sentences with continuation lengths $n_j$ the
    per-token cost and the perplexity factor are

    $$c=\\frac{-\\ln(1-\\varepsilon)\\sum_j n_j(n_j-1)/2}{\\sum_j n_j},\\qquad \\text{forced cost}=e^{c}-1 .$$

    A yardstick, not a bound: the eos step is ignored (where the ST model may gain), and the softmax model it
    is compared with also spends some mass on eos at every step. ``lengths``: continuation lengths, eos
    included (any iterable of ints). Returns the increase as a fraction (0.12 = +12 %)."""
    n = torch.as_tensor(list(lengths), dtype=torch.float64)
    if len(n) == 0 or bool((n < 1).any()):
        raise ValueError("need at least one continuation, each of at least one token (eos)")
    nats = -math.log1p(-epsilon) * float((n * (n - 1) / 2).sum()) / float(n.sum())
    return math.expm1(nats)
