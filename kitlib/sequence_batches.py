"""The batches the tiny Transformers of chapter ``deepnet-residual`` see: random windows of a token stream
(the character-level language model) and a synthetic translation task (the encoder-decoder models).

Both draw from a CPU ``torch.Generator``, so a seed fixes the batches on any device; move them afterwards.
"""

from __future__ import annotations

import torch


def random_windows(tokens: torch.Tensor, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` windows of ``length`` + 1 consecutive tokens from a 1-D token tensor, at uniformly random
    offsets: shape (batch, length + 1); a model reads windows[:, :-1] and predicts windows[:, 1:]."""
    starts = torch.randint(0, len(tokens) - length - 1, (batch,), generator=generator)
    return torch.stack([tokens[s : s + length + 1] for s in starts.tolist()])


def translation_pairs(count: int, length: int, vocabulary: int, generator: torch.Generator,
                      permutation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic translation task: sources of ``length`` random tokens from 1 … V−1, targets = the source
    reversed and mapped through a fixed ``permutation`` of the vocabulary (alignment plus a lexicon),

        target_j = permutation[source_{n+1−j}],  j = 1 … n,

    with token 0 as beginning-of-sentence. Returns (source (count, n), target (count, n + 1) starting with 0)."""
    source = torch.randint(1, vocabulary, (count, length), generator=generator)
    target = permutation[source.flip(1)]
    return source, torch.cat([torch.zeros(count, 1, dtype=torch.long), target], dim=1)
