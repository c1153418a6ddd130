"""The book's chapters: slugs, titles and where their sources live.

Slugs are fixed for the whole book; a chapter "exists" once `chapters/<slug>.md` is in the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Chapter:
    slug: str
    title: str
    title_zh: str
    post_url: str


CHAPTERS: tuple[Chapter, ...] = (
    Chapter("flooding", "Do we need zero training loss? Flooding",
            "我们真的需要把训练集的损失降低到零吗？", "https://kexue.fm/archives/7643"),
    Chapter("seq2seq-stop", "Seq2Seq that never stops", "如何应对Seq2Seq中的“根本停不下来”问题？",
            "https://kexue.fm/archives/7500"),
    Chapter("sampling-optimisation", "Optimisation as sampling", "从采样看优化：可导优化与不可导优化的统一视角",
            "https://kexue.fm/archives/7521"),
    Chapter("sgd-svm", "SGD ≈ SVM? The path kernel", "从动力学角度看优化算法（七）：SGD ≈ SVM？",
            "https://kexue.fm/archives/8009"),
    Chapter("wgan", "WGAN works because it fails to approximate W1",
            "WGAN的成功，可能跟Wasserstein距离没啥关系", "https://kexue.fm/archives/8244"),
    Chapter("dimension-formula", "The word-vector dimension formula n > 8.33 log N",
            "关于维度公式“n > 8.33 log N”的可用性分析", "https://kexue.fm/archives/8711"),
    Chapter("deepnet-residual", "Why residuals? DeepNet's update-size analysis",
            "为什么需要残差？一个来自DeepNet的视角", "https://kexue.fm/archives/8994"),
    Chapter("performer", "Performer: random-feature attention, and what linear attention gives up",
            "Performer：用随机投影将Attention的复杂度线性化", "https://kexue.fm/archives/7921"),
    Chapter("class-imbalance", "Class imbalance: reweighting, modified losses and logit adjustment",
            "再谈类别不平衡问题：调节权重与魔改Loss的对比联系", "https://kexue.fm/archives/7708"),
)

SLUGS: tuple[str, ...] = tuple(c.slug for c in CHAPTERS)

# The one list of profiles and devices (the command line, the run context and the record schema read it).
PROFILES: tuple[str, ...] = ("quick", "full")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class UnknownChapterError(ValueError):
    """A slug that is not one of the book's chapters."""


def project_root() -> Path:
    """The repository root: the folder holding `chapters/` next to the `kitlib` package."""
    return Path(__file__).resolve().parent.parent


def get_chapter(slug: str) -> Chapter:
    for chapter in CHAPTERS:
        if chapter.slug == slug:
            return chapter
    raise UnknownChapterError(f"unknown chapter {slug!r}; valid slugs: {', '.join(SLUGS)}")


def chapter_source(slug: str, root: Path | None = None) -> Path:
    """Path of the jupytext MyST source `chapters/<slug>.md` (which may not exist yet)."""
    get_chapter(slug)
    return (root or project_root()) / "chapters" / f"{slug}.md"


def written_chapters(root: Path | None = None) -> list[Chapter]:
    """The chapters whose source exists, in book order."""
    return [c for c in CHAPTERS if chapter_source(c.slug, root).exists()]
