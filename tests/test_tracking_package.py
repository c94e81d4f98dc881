"""The tracking package's seams: tag names load without MLflow, MLflow stays inside it, the store stays in the repo."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "synthboost"


def _python(code: str, *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_tag_names_and_the_package_import_with_mlflow_blocked(tmp_path):
    code = ("import sys; sys.modules['mlflow'] = None\n"
            "from synthboost.tracking.tags import KIND_EXPERIMENT, TAG_KIND, kind_filter\n"
            "from synthboost import tracking\n"
            "print(kind_filter(KIND_EXPERIMENT), tracking.TAG_KIND == TAG_KIND)")
    out = _python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tags.`synthboost.kind`", "=", "'experiment'", "and", "attributes.status", "=",
                                  "'FINISHED'", "True"]


def test_only_the_tracking_package_and_mlflow_native_import_mlflow():
    outside = []
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "tracking" or path.name == "mlflow_native.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            outside += [f"{path.relative_to(SRC)}:{node.lineno}" for n in names if n.split(".")[0] == "mlflow"]
    assert not outside, f"MLflow imported outside synthboost.tracking: {outside}"


def test_the_default_store_is_in_the_checkout_wherever_the_command_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SYNTHBOOST_HOME", "MLFLOW_TRACKING_URI")}
    out = _python("from synthboost import tracking; print(tracking.project_root()); print(tracking.tracking_uri())",
                  cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    root, uri = out.stdout.split()
    assert Path(root) == SRC.parents[1]
    assert uri == f"sqlite:///{SRC.parents[1] / 'tracking' / 'mlflow.db'}"
