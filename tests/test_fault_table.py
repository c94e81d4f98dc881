"""tests/fault_table.py: the generated fault table replaces only what is between its markers."""

from __future__ import annotations

import pytest

import fault_table

RECORD = {"test": "tests/test_faults.py::test_x[a]", "fault": "SIGKILL | mid-write", "store": "embedded",
          "checked": "resumes", "before": {"label": "after the kill", "runs": {"RUNNING": 2}, "trials": {"RUNNING": 1}},
          "after": {"label": "after the resume", "runs": {"FINISHED": 2, "FAILED": 1}, "trials": None},
          "outcome": "passed", "seconds": 41.6, "finished_at": 1.0}


def test_the_table_is_rewritten_between_the_markers_and_the_prose_is_kept(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{fault_table.START}\nold table\n{fault_table.END}\n\nafter\n")
    for _ in range(2):  # twice: the second run replaces the first table, it does not add to it
        fault_table.rewrite_readme(fault_table.render([RECORD], "Generated today"), readme)
    text = readme.read_text()
    assert text.startswith("intro\n\n") and text.endswith(f"{fault_table.END}\n\nafter\n")
    assert "old table" not in text and text.count("| SIGKILL \\| mid-write | embedded |") == 1
    assert "*after the kill*: runs 2 RUNNING; trials 1 RUNNING" in text
    assert "*after the resume*: runs 1 FAILED, 2 FINISHED |" in text  # no Optuna study: no trials column text
    assert "`test_x[a]` | passed, 42 s |" in text and "Generated today" in text


def test_a_readme_without_markers_is_a_one_line_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="has no <!-- fault-table:start -->"):
        fault_table.rewrite_readme("| t |", readme)
    assert readme.read_text() == "no markers\n"
