"""`synthboost readme`: the README's result tables are refilled from the reports' headline.md, never typed."""

from __future__ import annotations

from typer.testing import CliRunner

from synthboost.cli import app

DOC = """# results

<!-- synthboost:table docs/fair/headline.md -->
| old | table |
<!-- /synthboost:table -->

text between

<!-- synthboost:table docs/gan/headline.md -->
<!-- /synthboost:table -->
"""


def _write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_blocks_are_refilled_from_their_sources_and_a_second_run_changes_nothing(tmp_path):
    readme = _write(tmp_path, "README.md", DOC)
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


def test_a_missing_source_or_an_open_block_exits_2_and_leaves_the_readme_alone(tmp_path):
    readme = _write(tmp_path, "README.md", DOC)
    _write(tmp_path, "docs/fair/headline.md", "| new |\n")
    result = CliRunner().invoke(app, ["readme", "--file", str(readme)])
    assert result.exit_code == 2
    line, = result.stderr.strip().splitlines()
    assert "docs/gan/headline.md does not exist" in line and "synthboost report --out docs/gan" in line
    assert readme.read_text() == DOC
    _write(tmp_path, "README.md", "<!-- synthboost:table docs/fair/headline.md -->\n| x |\n")
    result = CliRunner().invoke(app, ["readme", "--file", str(readme)])
    assert result.exit_code == 2 and "no `<!-- /synthboost:table -->` end marker" in result.stderr
