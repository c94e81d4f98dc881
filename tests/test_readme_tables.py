"""`synthboost readme`: the result tables of docs/results.md are refilled from the reports' headline.md, never typed."""

from __future__ import annotations

from typer.testing import CliRunner

from synthboost.cli import app

DOC = """# results

<!-- synthboost:table fair/headline.md -->
| old | table |
<!-- /synthboost:table -->

text between

<!-- synthboost:table gan/headline.md -->
<!-- /synthboost:table -->
"""


def _write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_blocks_are_refilled_from_their_sources_and_a_second_run_changes_nothing(tmp_path):
    readme = _write(tmp_path, "docs/results.md", DOC)
    _write(tmp_path, "docs/fair/headline.md", "| run | accuracy |\n|---|---|\n| none | 79.2 |\n")
    _write(tmp_path, "docs/gan/headline.md", "| cgan | 80.3 |\n")
    result = CliRunner().invoke(app, ["readme", "--file", str(readme)])
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert "| old | table |" not in text and "| none | 79.2 |" in text and "| cgan | 80.3 |" in text
    assert text.index("| none | 79.2 |") < text.index("text between") < text.index("| cgan | 80.3 |")
    assert text.count("<!-- /synthboost:table -->") == 2  # markers kept: the next report refills them again
    CliRunner().invoke(app, ["readme", "--file", str(readme)])
    assert readme.read_text() == text


def test_a_missing_source_or_an_open_block_exits_2_and_leaves_the_page_alone(tmp_path):
    readme = _write(tmp_path, "docs/results.md", DOC)
    _write(tmp_path, "docs/fair/headline.md", "| new |\n")
    result = CliRunner().invoke(app, ["readme", "--file", str(readme)])
    assert result.exit_code == 2
    line, = result.stderr.strip().splitlines()
    assert "gan/headline.md does not exist" in line  # the command to run names the folder from where one stands:
    assert f"synthboost report --out {tmp_path / 'docs' / 'gan'}`" in line
    assert readme.read_text() == DOC
    _write(tmp_path, "docs/results.md", "<!-- synthboost:table fair/headline.md -->\n| x |\n")
    result = CliRunner().invoke(app, ["readme", "--file", str(readme)])
    assert result.exit_code == 2 and "no `<!-- /synthboost:table -->` end marker" in result.stderr


def test_without_file_it_refills_docs_results_md_of_the_working_directory(tmp_path, monkeypatch):
    results = _write(tmp_path, "docs/results.md", DOC)
    _write(tmp_path, "docs/fair/headline.md", "| none | 79.2 |\n")
    _write(tmp_path, "docs/gan/headline.md", "| cgan | 80.3 |\n")
    readme = _write(tmp_path, "README.md", "# x\n\n[the results](docs/results.md)\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["readme"])
    assert result.exit_code == 0, result.output
    assert "docs/results.md: 2 table(s) refilled" in result.stdout
    assert "| none | 79.2 |" in results.read_text() and readme.read_text() == "# x\n\n[the results](docs/results.md)\n"


def test_the_committed_results_page_holds_every_headline_table():
    """docs/results.md, not the README, carries the pasted tables, and each names a report that exists."""
    from pathlib import Path

    from synthboost.report.readme import BLOCK

    root = Path(__file__).resolve().parents[1]
    sources = [m["src"] for m in BLOCK.finditer(root.joinpath("docs", "results.md").read_text())]
    assert sources == ["verdict/headline.md", "fair/headline.md", "fair-balanced/headline.md", "tuned-high/headline.md",
                       "tuned-balanced/headline.md"]
    assert all(root.joinpath("docs", s).is_file() for s in sources)
    assert "synthboost:table" not in root.joinpath("README.md").read_text()
