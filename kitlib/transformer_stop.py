"""A decoder-only Transformer LM over word ids, with or without the self-terminating (ST) output layer: the
seq2seq-stop chapter's stand-in for the paper's GPT-2 experiment (full profile only).

The body is :class:`kitlib.tiny_transformers.TinyTransformerLM` with ``norm="pre_ln"`` (learned token and
position embeddings, pre-LN blocks of causal softmax attention and a ReLU FFN of width 4·width, a final LN and
an output layer), which maps the tokens $y_{1..T}$ to logits
$z_1,\\dots,z_T$. The output is either $\\log\\mathrm{softmax}(z_t)$ or the ST layer of
:class:`kitlib.language_model.SelfTerminatingLayer` over the continuation steps $t=1,2,\\dots$ after the context:

$$\\beta_t=(1-\\varepsilon)\\,\\sigma(z_{t,\\mathrm{eos}}),\\qquad p_t(\\mathrm{eos})=1-\\prod_{i\\le t}\\beta_i,\\qquad
p_t(v)=\\Big(\\prod_{i\\le t}\\beta_i\\Big)\\mathrm{softmax}_{V\\setminus\\{\\mathrm{eos}\\}}(z_t)_v,$$

as the official ``gpt2/st_utils.py`` wraps GPT-2. The model has the interface of
:class:`kitlib.language_model.RecurrentLM`: ``continuation_log_probs(inputs, context)`` for training and
perplexity (``kitlib.lm_training``), ``start(prefixes)`` / ``step(tokens, state)`` for ``kitlib.decoding``.
There is no key/value cache: every step recomputes the forward pass over the last ``window`` tokens, and
the decoding state is (token history (B, T), $\\log\\prod_{i<t}\\beta_i$ (B,)). Past ``window`` tokens the model
sees only the most recent ``window`` of them (at positions 0 … window − 1): our choice, so that decodes can
run past the learned positions (GPT-2 itself has no sliding window).
"""

from __future__ import annotations

import torch
from torch import nn

from .language_model import SelfTerminatingLayer
from .tiny_transformers import TinyTransformerLM


class TransformerSentenceLM(nn.Module):
    """Decoder-only Transformer LM (pre-LN ``TinyTransformerLM`` body) with a softmax or ST output; eos is the
    last id."""

    def __init__(self, vocab_size: int, width: int = 64, layers: int = 2, heads: int = 4, window: int = 64,
                 st_epsilon: float | None = None):
        super().__init__()
        self.body = TinyTransformerLM(vocab_size, layers, "pre_ln", width=width, ffn_width=4 * width, heads=heads,
                                      context=window)
        self.window, self.eos_id = int(window), vocab_size - 1
        self.st = SelfTerminatingLayer(st_epsilon, self.eos_id) if st_epsilon else None

    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.body(tokens[:, -self.window:])

    def continuation_logits(self, inputs: torch.Tensor, context: int) -> torch.Tensor:
        """Logits $z_t$ (B, T − context + 1, V) after the first ``context`` inputs (teacher forcing);
        inputs (B, T) with T ≤ window (right padding is harmless: attention is causal)."""
        if inputs.shape[1] > self.window:
            raise ValueError(f"inputs of length {inputs.shape[1]} exceed the window of {self.window} positions")
        return self.body(inputs)[:, context - 1:]

    def continuation_log_probs(self, inputs: torch.Tensor, context: int) -> torch.Tensor:
        """Log-probabilities (B, T − context + 1, V) of the continuation tokens (softmax or ST layer)."""
        logits = self.continuation_logits(inputs, context)
        return self.st(logits) if self.st is not None else logits.log_softmax(-1)

    def _output(self, history: torch.Tensor, log_survival: torch.Tensor):
        logits = self._logits(history)[:, -1]
        if self.st is None:
            return logits.log_softmax(-1), (history, log_survival)
        log_probs, log_survival = self.st.step(logits, log_survival)
        return log_probs, (history, log_survival)

    def start(self, prefixes: torch.Tensor):
        """Log-probabilities of the first continuation token (B, V) and the decoding state."""
        return self._output(prefixes, torch.zeros(prefixes.shape[0], device=prefixes.device))

    def step(self, tokens: torch.Tensor, state: tuple):
        """Append ``tokens`` (B,) to the history and return the next log-probabilities and state."""
        history, log_survival = state
        return self._output(torch.cat([history, tokens[:, None]], 1), log_survival)
