"""What users install: the git-tracked files minus .comfyignore (the Comfy Registry archive).
Dev tooling stays out of it, and nothing that ships imports what does not."""

import ast
import fnmatch
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def ignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".comfyignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("/") and (path + "/").startswith(pattern):
            return True
        if fnmatch.fnmatch(path, pattern):
            return True
    return False


def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return [path for path in out.split("\0") if path]


def shipped() -> list[str]:
    patterns = ignore_patterns()
    return [path for path in tracked() if not ignored(path, patterns)]


def test_dev_tooling_does_not_ship():
    files = shipped()
    for folder in ("tests/", "harness/", "bench/", "scripts/", ".ci/"):
        assert not [f for f in files if f.startswith(folder)], folder
    assert "__init__.py" in files and "nodes/__init__.py" in files and "pyproject.toml" in files
    assert any(f.startswith("workflows/") and f.endswith(".json") for f in files)
    assert any(f.startswith("web/docs/") for f in files)


def imported_modules(path: Path, package: list[str]) -> list[list[str]]:
    """Repository-relative module paths that a file in ``package`` (["nodes"] for
    nodes/vsf.py and nodes/__init__.py) imports from the pack: relative imports (``from ..harness
    import zoo`` -> ["harness", "zoo"] and ["harness"]) and absolute ``negguide.*`` ones."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            found.append(base)
            found += [base + [alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "negguide":
            found.append(node.module.split(".")[1:])
        elif isinstance(node, ast.Import):
            found += [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "negguide"]
    return found


def test_nothing_that_ships_imports_what_does_not():
    files = set(shipped())
    problems = []
    for rel in sorted(f for f in files if f.endswith(".py")):
        package = rel.split("/")[:-1]
        for target in imported_modules(REPO_ROOT / rel, package):
            joined = "/".join(target)
            for candidate in (f"{joined}.py", f"{joined}/__init__.py"):
                if (REPO_ROOT / candidate).is_file() and candidate not in files:
                    problems.append(f"{rel} imports {'.'.join(target)}, and {candidate} does not ship")
    assert not problems, "\n".join(problems)
