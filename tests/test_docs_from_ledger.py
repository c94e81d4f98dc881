"""The committed ledger regenerates the committed reports' headline tables, docs/results.md's numbers, unchanged: what
`make docs` does on a fresh machine, checked on every CI run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthboost.cli import app
from synthboost.report import build_report
from synthboost.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]


def docs_reports() -> dict[str, tuple[list[str], list[str]]]:
    """{docs folder: (experiments, models)} of every `synthboost report` line in the Makefile's `docs` target."""
    text = ROOT.joinpath("Makefile").read_text()
    variables = dict(re.findall(r"^(\w+)\s*=\s*(.*)$", text, flags=re.M))
    target = text[text.index("\ndocs:"):].split("\n\n")[0]
    out = {}
    for line in target.splitlines():
        if "synthboost report" not in line:
            continue
        words = shlex.split(re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), line))
        flag = lambda name: [words[i + 1] for i, w in enumerate(words) if w == name]  # noqa: E731
        out[flag("--out")[0]] = (flag("--experiment"), flag("--model"))
    return out


def normalized(text: str) -> str:
    return re.sub(r"generated \S+ by", "generated … by", text)  # the moment it was generated, nothing else


@pytest.mark.slow
def test_the_committed_ledger_regenerates_every_committed_headline_unchanged(tmp_path, monkeypatch):
    committed = sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.glob("docs/*/headline.md"))
    reports = docs_reports()
    assert committed and set(committed) <= set(reports), f"a committed headline `make docs` does not regenerate: " \
                                                         f"{sorted(set(committed) - set(reports))}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # named like the measurement store: the headline names its file
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = CliRunner().invoke(app, ["ledger", "import", "--dir", str(ROOT / "tracking" / "ledger"), "--no-journal"])
    assert out.exit_code == 0 and "run(s) imported" in out.stdout, out.output
    differ = []
    for folder in committed:
        experiments, models = reports[folder]
        build_report(experiments=experiments, models=models or None, out_dir=tmp_path / folder, formats={"md"},
                     tracker=Tracker(uri), log_to_mlflow=False)
        want = normalized(ROOT.joinpath(folder, "headline.md").read_text())
        if normalized((tmp_path / folder / "headline.md").read_text()) != want:
            differ.append(folder)
    assert not differ, f"regenerated from tracking/ledger/, these headlines differ from the committed ones: {differ}"
