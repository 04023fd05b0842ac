"""The Comfy Registry's validation rules (`comfy node validate`: ruff S102 exec, S307 eval, E702
multiple statements) plus pyflakes errors, over everything in the repository."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_ruff_registry_rules_and_pyflakes():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
         "--select", "F,E9,S102,S307,E702", "--exclude", ".host,.venv,.venv-*,.cache", str(REPO_ROOT)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
