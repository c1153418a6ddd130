"""Language models for the seq2seq-stop chapter: the self-terminating output layer, a recurrent LM (tanh-RNN or
LSTM, tied embeddings, as in Welleck et al. 2020) and an exact toy LM. Sentence data is in
``kitlib.sentences``, training and perplexity in ``kitlib.lm_training``.

Every model here decodes through ``start(prefixes)`` / ``step(tokens, state)`` (see ``kitlib.decoding``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SelfTerminatingLayer(nn.Module):
    """The self-terminating (ST) softmax (Welleck et al. 2020), over continuation steps $t=1,2,\\dots$:

    $$\\beta_t=(1-\\varepsilon)\\,\\sigma(z_{t,\\mathrm{eos}}),\\qquad
    p_t(\\mathrm{eos})=1-\\prod_{i\\le t}\\beta_i,\\qquad
    p_t(v)=\\Big(\\prod_{i\\le t}\\beta_i\\Big)\\,\\mathrm{softmax}_{V\\setminus\\{\\mathrm{eos}\\}}(z_t)_v,$$

    so $p_t(\\mathrm{eos})$ never decreases and $p_t(\\mathrm{eos})\\ge1-(1-\\varepsilon)^t$. Computed in log space;
    $\\beta_t$ is clamped at $10^{-10}$ as in the official code so that non-eos log-probabilities stay finite.

    ``forward(logits)`` is the cumulative form over the step dimension (-2), used in training;
    ``step(logits, log_survival)`` the recursion on $\\log\\prod_{i\\le t}\\beta_i$, used in decoding."""

    def __init__(self, epsilon: float, eos_id: int):
        super().__init__()
        if not 0 < epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
        self.epsilon, self.eos_id = float(epsilon), int(eos_id)

    def _log_beta(self, logits: torch.Tensor) -> torch.Tensor:
        log_beta = math.log1p(-self.epsilon) + nn.functional.logsigmoid(logits[..., self.eos_id])
        return log_beta.clamp(min=math.log(1e-10))

    def _assemble(self, logits: torch.Tensor, log_survival: torch.Tensor) -> torch.Tensor:
        is_eos = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        is_eos[self.eos_id] = True
        others = logits.masked_fill(is_eos, -math.inf).log_softmax(-1) + log_survival[..., None]
        log_p_eos = torch.log(-torch.expm1(log_survival))
        return torch.where(is_eos, log_p_eos[..., None], others)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities for logits (..., T, V), step 1 … T along dimension -2."""
        return self._assemble(logits, self._log_beta(logits).cumsum(-1))

    def step(self, logits: torch.Tensor, log_survival: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: logits (..., V) and $\\log\\prod_{i<t}\\beta_i$ (zeros before the first step)."""
        log_survival = log_survival + self._log_beta(logits)
        return self._assemble(logits, log_survival), log_survival


def greedy_stop_bound(epsilon: float) -> int:
    """$m^*=\\lceil\\ln\\frac12/\\ln(1-\\varepsilon)\\rceil$: the first step at which $1-(1-\\varepsilon)^m>\\frac12$,
    so greedy decoding of any model with a ``SelfTerminatingLayer`` has emitted eos by step $m^*$ (the paper's
    greedy-termination theorem for the ST layer). Used by seq2seq-stop (S5)."""
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    return math.ceil(math.log(0.5) / math.log1p(-epsilon))


@torch.no_grad()
def st_layer_errors(layer: SelfTerminatingLayer, logits: torch.Tensor) -> dict[str, float]:
    """How far a self-terminating layer is from its three properties and its two forms from each other, on
    logits (B, T, V) of the continuation steps $t=1\\dots T$ (probabilities $p_t$ from the cumulative form):

    - ``sum``: $\\max|\\sum_v p_t(v)-1|$;
    - ``decrease``: $\\max_t\\,(p_t(\\mathrm{eos})-p_{t+1}(\\mathrm{eos}))^+$ (0 when p(eos) never decreases);
    - ``bound``: $\\max_t\\,(1-(1-\\varepsilon)^t-p_t(\\mathrm{eos}))^+$ (0 when the floor holds);
    - ``forms``: $\\max|p^{\\text{cumulative}}_t-p^{\\text{step}}_t|$, the training form against the decoding
      recursion. Used by seq2seq-stop (S4, S6)."""
    cumulative = layer(logits)
    log_survival, stepped = torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device), []
    for t in range(logits.shape[1]):
        log_probs, log_survival = layer.step(logits[:, t], log_survival)
        stepped.append(log_probs)
    probs, stepped = cumulative.exp(), torch.stack(stepped, 1).exp()
    p_eos = probs[..., layer.eos_id]
    steps = torch.arange(1, logits.shape[1] + 1, device=logits.device, dtype=logits.dtype)
    floor = 1 - (1 - layer.epsilon) ** steps
    return {"sum": float((probs.sum(-1) - 1).abs().max()),
            "decrease": float((-p_eos.diff(dim=1)).clamp(min=0).max()) + 0.0 if logits.shape[1] > 1 else 0.0,
            "bound": float((floor - p_eos).clamp(min=0).max()),
            "forms": float((probs - stepped).abs().max())}


@torch.no_grad()
def recurrent_logit_bound(model: "RecurrentLM") -> float:
    """A bound $B$ on every output logit of a tanh-RNN or LSTM LM in eval mode: its top-layer state has
    $|h_i|\\le1$ ($\\tanh$, or $o\\odot\\tanh c$ with $o\\in(0,1)$), so
    $|z_v|=|w_v^\\top h+b_v|\\le\\|w_v\\|_1+|b_v|$ and $B=\\max_v(\\|w_v\\|_1+|b_v|)$, whence
    $p(\\mathrm{eos})\\ge e^{-2B}/|V|$ at every step. Used by seq2seq-stop (§5)."""
    return float((model.out.weight.abs().sum(1) + model.out.bias.abs()).max())


class RecurrentLM(nn.Module):
    """Word-level recurrent LM: embedding → tanh-RNN or LSTM → dropout → output tied to the embedding
    (so the embedding size is the hidden size), softmax or ``SelfTerminatingLayer`` when ``st_epsilon``."""

    def __init__(self, vocab_size: int, hidden: int, layers: int = 1, cell: str = "rnn", dropout: float = 0.0,
                 eos_id: int | None = None, st_epsilon: float | None = None):
        super().__init__()
        if cell not in ("rnn", "lstm"):
            raise ValueError(f"cell must be 'rnn' (tanh) or 'lstm', got {cell!r}")
        self.eos_id = vocab_size - 1 if eos_id is None else int(eos_id)
        self.cell = cell
        self.embed = nn.Embedding(vocab_size, hidden)
        recurrent = nn.RNN if cell == "rnn" else nn.LSTM
        extra = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = recurrent(hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0,
                             **extra)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)
        self.out.weight = self.embed.weight
        self.st = SelfTerminatingLayer(st_epsilon, self.eos_id) if st_epsilon else None

    def continuation_logits(self, inputs: torch.Tensor, context: int) -> torch.Tensor:
        """Output logits $z_t$ (B, T − context + 1, V) at the steps after the first ``context`` inputs,
        before the softmax or the ST layer (teacher forcing)."""
        hidden, _ = self.rnn(self.drop(self.embed(inputs)))
        return self.out(self.drop(hidden[:, context - 1:]))

    def continuation_log_probs(self, inputs: torch.Tensor, context: int) -> torch.Tensor:
        """Log-probabilities (B, T − context + 1, V) of the tokens after the first ``context`` inputs
        (the context itself is not scored; the ST product starts at the first continuation step)."""
        logits = self.continuation_logits(inputs, context)
        return self.st(logits) if self.st is not None else logits.log_softmax(-1)

    def _recurrent_state(self, state: tuple) -> torch.Tensor | tuple:
        if self.cell == "lstm":
            return state[0].transpose(0, 1).contiguous(), state[1].transpose(0, 1).contiguous()
        return state[0].transpose(0, 1).contiguous()

    def _output(self, hidden_last, recurrent, log_survival):
        logits = self.out(hidden_last)
        recurrent = recurrent if isinstance(recurrent, tuple) else (recurrent,)
        state = tuple(r.transpose(0, 1) for r in recurrent)  # batch first, for kitlib.decoding
        if self.st is None:
            return logits.log_softmax(-1), state + (log_survival,)
        log_probs, log_survival = self.st.step(logits, log_survival)
        return log_probs, state + (log_survival,)

    def start(self, prefixes: torch.Tensor):
        hidden, recurrent = self.rnn(self.embed(prefixes))
        zeros = torch.zeros(prefixes.shape[0], device=prefixes.device)
        return self._output(hidden[:, -1], recurrent, zeros)

    def step(self, tokens: torch.Tensor, state: tuple):
        hidden, recurrent = self.rnn(self.embed(tokens)[:, None], self._recurrent_state(state))
        return self._output(hidden[:, -1], recurrent, state[-1])


class LoopLM:
    """An exact toy LM over V tokens (eos = V − 1) with fixed logits: after token 0 the favoured next token is
    1, after any other token it is 0; the favoured token has logit ``favoured_logit``, eos ``eos_logit``, the
    rest 0. So p(eos) is the same positive number at every step — the model is consistent — yet greedy,
    top-k (k ≤ V − 1 when eos is the least likely token) and nucleus decoding may never reach eos. With ``st_epsilon`` the logits pass through
    the self-terminating layer instead of a softmax. ``dtype`` is that of the logits (float64 for exact
    bounds: in float32 the ST product accumulates about one rounding error a step)."""

    def __init__(self, vocab_size: int = 20, favoured_logit: float = 3.0, eos_logit: float = -1.0,
                 st_epsilon: float | None = None, dtype: torch.dtype = torch.float32):
        if vocab_size < 4:
            raise ValueError(f"vocab_size must be at least 4, got {vocab_size}")
        self.eos_id = vocab_size - 1
        self.vocab_size, self.favoured_logit, self.eos_logit = vocab_size, favoured_logit, eos_logit
        self.st = SelfTerminatingLayer(st_epsilon, self.eos_id) if st_epsilon else None
        self.dtype = dtype

    def logits(self, last: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(last.shape[0], self.vocab_size, device=last.device, dtype=self.dtype)
        logits[:, self.eos_id] = self.eos_logit
        favoured = (last == 0).long()
        return logits.scatter(1, favoured[:, None], self.favoured_logit)

    def eos_probability(self) -> float:
        """p(eos) at every step of the softmax version."""
        z = torch.tensor([self.favoured_logit, self.eos_logit] + [0.0] * (self.vocab_size - 2), dtype=torch.float64)
        return float(z.softmax(0)[1])

    def _output(self, last, log_survival):
        logits = self.logits(last)
        if self.st is None:
            return logits.log_softmax(-1), (last, log_survival)
        log_probs, log_survival = self.st.step(logits, log_survival)
        return log_probs, (last, log_survival)

    def start(self, prefixes: torch.Tensor):
        return self._output(prefixes[:, -1], torch.zeros(prefixes.shape[0], device=prefixes.device,
                                                         dtype=self.dtype))

    def step(self, tokens: torch.Tensor, state: tuple):
        return self._output(tokens, state[1])
