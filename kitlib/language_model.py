"""Language models for the seq2seq-stop chapter: the self-terminating output layer, a recurrent LM (tanh-RNN or
LSTM, tied embeddings, as in Welleck et al. 2020), an exact toy LM, and sentence data with a fixed context.

Every model here decodes through ``start(prefixes)`` / ``step(tokens, state)`` (see ``kitlib.decoding``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from .train import DivergenceError, progress_bar

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"


class SelfTerminatingLayer(nn.Module):
    """The self-terminating (ST) softmax (Welleck et al. 2020, Eq. 7–8), over continuation steps $t=1,2,\\dots$:

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

    def continuation_log_probs(self, inputs: torch.Tensor, context: int) -> torch.Tensor:
        """Log-probabilities (B, T − context + 1, V) of the tokens after the first ``context`` inputs
        (the context itself is not scored; the ST product starts at the first continuation step)."""
        hidden, _ = self.rnn(self.drop(self.embed(inputs)))
        logits = self.out(self.drop(hidden[:, context - 1:]))
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
    top-k (k < V − 1) and nucleus decoding may never reach eos. With ``st_epsilon`` the logits pass through
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


# --- sentences with a fixed context ---------------------------------------------------------------------------

@dataclass
class SentenceData:
    """Sentences as id tensors ending in eos, split into train / valid, with a vocabulary whose first ids are
    ``<pad>``, ``<unk>`` and whose last id is ``<eos>`` (as the official ST code requires)."""

    vocabulary: list[str]
    train: list[torch.Tensor]
    valid: list[torch.Tensor]
    context: int
    unk_rate: float = field(default=0.0)

    @property
    def eos_id(self) -> int:
        return len(self.vocabulary) - 1

    def words(self, ids) -> str:
        return " ".join(self.vocabulary[int(i)] for i in ids if int(i) >= 0)

    def prefixes(self, split: str, count: int) -> torch.Tensor:
        """The first ``context`` tokens of the first ``count`` sentences of a split (B, context)."""
        sentences = {"train": self.train, "valid": self.valid}[split]
        return torch.stack([s[: self.context] for s in sentences[:count]])

    def random_prefixes(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """Prefixes of uniformly random word ids (no special tokens), as in the paper's random-prefix set."""
        return torch.randint(2, self.eos_id, (count, self.context), generator=generator)


def sentence_data(sentences: list[list[str]], vocabulary_size: int, context: int, max_tokens: int,
                  valid_fraction: float, generator: torch.Generator, limit: int | None = None) -> SentenceData:
    """Keep sentences with more than ``context`` and at most ``max_tokens`` words, shuffle, split, and map
    words outside the ``vocabulary_size − 3`` most frequent training words to ``<unk>``."""
    kept = [s for s in sentences if context < len(s) <= max_tokens]
    if not kept:
        raise ValueError(f"no sentence has between {context + 1} and {max_tokens} tokens")
    order = torch.randperm(len(kept), generator=generator).tolist()
    kept = [kept[i] for i in order][:limit]
    n_valid = max(1, int(round(valid_fraction * len(kept))))
    train_words, valid_words = kept[n_valid:], kept[:n_valid]
    counts = Counter(w for s in train_words for w in s)
    vocabulary = [PAD, UNK] + [w for w, _ in counts.most_common(vocabulary_size - 3)] + [EOS]
    index = {w: i for i, w in enumerate(vocabulary)}
    eos = len(vocabulary) - 1

    def encode(words):
        return torch.tensor([index.get(w, 1) for w in words] + [eos], dtype=torch.long)

    train, valid = [encode(s) for s in train_words], [encode(s) for s in valid_words]
    unk_rate = sum(int((s == 1).sum()) for s in train) / sum(len(s) for s in train)
    return SentenceData(vocabulary, train, valid, context, unk_rate)


def length_batches(sentences: list[torch.Tensor], batch_size: int, generator: torch.Generator | None = None):
    """Batches of sentences of similar length, padded with 0; the batch order is shuffled when a generator
    is given. Yields (ids (B, T), lengths (B,))."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    if generator is not None:
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
    for chunk in chunks:
        lengths = torch.tensor([len(sentences[i]) for i in chunk])
        ids = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, : lengths[row]] = sentences[i]
        yield ids, lengths


def continuation_nll(model: RecurrentLM, ids: torch.Tensor, lengths: torch.Tensor,
                     context: int) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of every continuation token (after ``context``, eos included) and
    their number, for padded sentences."""
    log_probs = model.continuation_log_probs(ids[:, :-1], context)
    targets = ids[:, context:]
    scored = torch.arange(targets.shape[1], device=ids.device)[None, :] < (lengths[:, None] - context)
    picked = log_probs.gather(-1, targets[..., None]).squeeze(-1)
    return -(picked * scored).sum(), int(scored.sum())


@torch.no_grad()
def perplexity(model: RecurrentLM, sentences: list[torch.Tensor], context: int, device: torch.device,
               batch_size: int = 256) -> float:
    """exp of the mean continuation NLL per token (eos included)."""
    model.eval()
    total, count = 0.0, 0
    for ids, lengths in length_batches(sentences, batch_size):
        nll, n = continuation_nll(model, ids.to(device), lengths.to(device), context)
        total, count = total + float(nll), count + n
    return math.exp(total / count)


def train_recurrent_lm(model: RecurrentLM, data: SentenceData, epochs: int, batch_size: int, lr: float,
                       device: torch.device, generator: torch.Generator, clip: float = 1.0,
                       progress: bool = True, desc: str = "train LM") -> list[float]:
    """Adam on the continuation NLL (the official setup: lr 1e-3, gradient clipping at 1.0), halving the
    learning rate after an epoch whose validation perplexity did not improve. Returns the validation
    perplexity after each epoch; raises ``DivergenceError`` on a non-finite loss."""
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    valid_ppl = []
    for epoch in progress_bar(range(epochs), desc, progress):
        model.train()
        for step, (ids, lengths) in enumerate(length_batches(data.train, batch_size, generator)):
            nll, n = continuation_nll(model, ids.to(device), lengths.to(device), data.context)
            loss = nll / n
            if not torch.isfinite(loss):
                raise DivergenceError(f"loss became {float(loss)} at epoch {epoch}, step {step}: lower the "
                                      "learning rate or the gradient clipping threshold")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimiser.step()
        valid_ppl.append(perplexity(model, data.valid, data.context, device))
        if len(valid_ppl) > 1 and valid_ppl[-1] >= min(valid_ppl[:-1]):
            for group in optimiser.param_groups:
                group["lr"] *= 0.5
    model.eval()
    return valid_ppl


def sequence_log_probs(model: RecurrentLM, prefixes: torch.Tensor, tokens: torch.Tensor,
                       lengths: torch.Tensor) -> torch.Tensor:
    """Differentiable $\\sum_t\\log p(y_t\\mid\\text{prefix},y_{<t})$ of decoded continuations (B, T) padded
    with −1 after ``lengths``: the score function of policy gradient."""
    steps = int(lengths.max())
    continuation = tokens[:, :steps].clamp(min=0)
    inputs = torch.cat([prefixes, continuation[:, :-1]], dim=1)
    log_probs = model.continuation_log_probs(inputs, prefixes.shape[1])
    picked = log_probs.gather(-1, continuation[..., None]).squeeze(-1)
    scored = torch.arange(steps, device=tokens.device)[None, :] < lengths[:, None]
    return (picked * scored).sum(-1)


def policy_gradient_loss(model: RecurrentLM, prefixes: torch.Tensor, max_len: int, cost,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """REINFORCE with the batch-mean baseline: sample continuations (ancestral), score each with
    ``cost(decoded)`` (B,), and return the loss $\\frac1B\\sum_i(c_i-\\bar c)\\log p_\\theta(y_i)$, whose
    gradient estimates $\\nabla\\mathbb E[c]$, with the mean cost."""
    from .decoding import sample

    with torch.no_grad():
        decoded = sample(model, prefixes, max_len, generator=generator)
    costs = cost(decoded).to(prefixes.device).float()
    log_p = sequence_log_probs(model, prefixes, decoded.tokens, decoded.lengths)
    return ((costs - costs.mean()) * log_p).mean(), float(costs.mean())
