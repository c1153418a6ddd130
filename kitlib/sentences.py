"""Sentences as id tensors with a fixed context (seq2seq-stop, sampling-optimisation): vocabulary, splits,
prefixes, and batches of similar length."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"


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


