"""The directions of dependence (ARCHITECTURE.md), checked on the source and in fresh interpreters.

- rewardmodel may import labeling; labeling never imports rewardmodel.
- rewardmodel/core imports neither Django nor the apps, and its config and
  example types load without torch.
- Web processes never import torch.
- Only tasks modules (and the Celery app in config/) touch Celery.
- rewardmodel's modules import one another in one direction: no cycle, not
  even through the imports inside functions, and every import inside a
  function says why it is there.
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("labeling", "rewardmodel", "config")


def modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of a package in the source tree."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported_names(tree: ast.AST, module: str, *, is_package: bool) -> list[tuple[ast.stmt, str]]:
    """(import statement, absolute module name it names) for every import in the tree, at any depth."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            # `from package import module` names the submodule; `from module import name` the module.
            names += [(node, stem)] + [(node, f"{stem}.{alias.name}") for alias in node.names]
    return names


def function_level(tree: ast.AST) -> set[int]:
    """ids of the import statements inside a function body."""
    inner = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return inner


def parsed(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def import_graph(package: str, *, with_function_level: bool) -> dict[str, set[str]]:
    known = modules(package)
    graph = {}
    for module, path in known.items():
        tree = parsed(path)
        inner = function_level(tree)
        graph[module] = {
            name
            for node, name in imported_names(tree, module, is_package=path.name == "__init__.py")
            if name in known and name != module and (with_function_level or id(node) not in inner)
        }
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == "open":
                return path[path.index(successor) :] + [successor]
            if successor not in state and (found := visit(successor)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def fresh_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
    }
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


# -- torch stays where it belongs ---------------------------------------------------------


@pytest.mark.parametrize("module", ["rewardmodel.core", "rewardmodel.core.config", "rewardmodel.core.examples"])
def test_the_cores_config_and_example_types_load_without_torch(module, tmp_path):
    result = fresh_python(
        f"import sys, {module}; print(sorted({{'torch', 'transformers'}} & set(sys.modules)))", tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_web_process_never_imports_torch(tmp_path):
    # Everything a web process loads: the apps (admin and signal receivers
    # included, at setup), every URL's views, and what they publish with.
    code = (
        "import sys, django; django.setup(); "
        "import config.urls, config.wsgi, rewardmodel.tasks, rewardmodel.actions, rewardmodel.serving; "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    result = fresh_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- who may import whom ----------------------------------------------------------------------


def test_labeling_never_imports_rewardmodel():
    offenders = [
        f"{module} imports {name}"
        for module, path in modules("labeling").items()
        for _, name in imported_names(parsed(path), module, is_package=path.name == "__init__.py")
        if name == "rewardmodel" or name.startswith("rewardmodel.")
    ]
    assert offenders == []


def test_the_core_imports_neither_django_nor_the_apps():
    forbidden = ("django", "rest_framework", "celery", "kombu", "labeling", "config")
    offenders = [
        f"{module} imports {name}"
        for module, path in modules("rewardmodel/core").items()
        for _, name in imported_names(parsed(path), module, is_package=path.name == "__init__.py")
        if name.split(".")[0] in forbidden
        or (name.startswith("rewardmodel.") and not name.startswith("rewardmodel.core"))
    ]
    assert offenders == []


def test_only_tasks_modules_and_the_celery_app_touch_celery():
    allowed = {"config.celery", "config.broker"}
    offenders = [
        f"{module} imports {name}"
        for package in APPS
        for module, path in modules(package).items()
        for _, name in imported_names(parsed(path), module, is_package=path.name == "__init__.py")
        if name.split(".")[0] in ("celery", "kombu") and path.name != "tasks.py" and module not in allowed
    ]
    assert offenders == []


# -- rewardmodel in one direction ------------------------------------------------------------


def test_rewardmodel_modules_import_each_other_without_a_cycle():
    assert cycle_in(import_graph("rewardmodel", with_function_level=False)) is None


def test_not_even_the_imports_inside_functions_close_a_cycle():
    assert cycle_in(import_graph("rewardmodel", with_function_level=True)) is None


def test_the_cycle_check_finds_a_cycle():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None


def says_why(line: str) -> bool:
    """A comment with words in it, not only a linter's noqa."""
    comment = line.partition("#")[2]
    return bool(re.search(r"[a-z]{3}", re.sub(r"noqa(:\s*[A-Z0-9, ]+)?", "", comment)))


def test_every_import_inside_a_function_says_why():
    unexplained = []
    for module, path in modules("rewardmodel").items():
        tree = parsed(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        inner = function_level(tree)
        for node in ast.walk(tree):
            if id(node) not in inner:
                continue
            # A comment on the import's line, or on the line just above it (or above its run of imports).
            above = node.lineno - 2
            while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
                above -= 1
            reason_above = above >= 0 and lines[above].strip().startswith("#")
            if not (says_why(lines[node.lineno - 1]) or reason_above):
                unexplained.append(f"{module}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert unexplained == []
