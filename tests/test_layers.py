"""The import rules that keep the layers of ARCHITECTURE.md apart (issue 17).

Read from the source: every import statement of `app/` and `worker/` (those inside functions
too, which are imports all the same), except under `if TYPE_CHECKING:`. And checked by
importing, in a fresh interpreter, what each rule is about.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "worker")
WEB_STACK = ("fastapi", "sqlalchemy", "celery", "jinja2")
COMPOSITION_ROOTS = {"app.web.main", "app.cli"}
TRAINING = "worker.training"


def module_names() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = module_names()


def imported_names(path: Path) -> Iterator[str]:
    """The dotted names `path` imports (a `from x import y` yields `x.y`: y may be a module)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        yield child
        yield from _runtime_nodes(child)


def project_module(name: str) -> str | None:
    """The project module that an imported name lives in, if any."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        targets = {project_module(imported) for imported in imported_names(path)}
        graph[name] = {target for target in targets if target and target != name}
    return graph


GRAPH = import_graph()


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in GRAPH[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def circles() -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    return found


def test_no_two_modules_import_each_other_in_a_circle():
    assert circles() == []


def test_the_circle_finder_finds_a_circle():
    GRAPH["app.config"].add("app.db")  # app.db imports app.config
    try:
        assert ["app.config", "app.db"] in circles()
    finally:
        GRAPH["app.config"].discard("app.db")


def test_only_the_composition_roots_import_the_worker():
    importers = {
        module
        for module, targets in GRAPH.items()
        if module.startswith("app") and any(target.startswith("worker") for target in targets)
    }
    assert importers <= COMPOSITION_ROOTS


def training_modules() -> list[str]:
    return sorted(name for name in MODULES if name == TRAINING or name.startswith(TRAINING + "."))


def test_training_reaches_no_web_stack_module_through_the_project():
    """Statically: no module that worker/training reaches imports the web stack itself."""
    offenders = {}
    for module in training_modules():
        for reached in {module} | reachable(module):
            stack = sorted(
                name for name in imported_names(MODULES[reached]) if name.split(".")[0] in WEB_STACK
            )
            if stack:
                offenders[reached] = stack
    assert offenders == {}


def loaded_after(imports: list[str], *, before: list[str] = ()) -> set[str]:
    """The top-level packages that importing `imports` loads in a fresh interpreter, beyond
    those `before` loaded."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {list(before)!r}: importlib.import_module(name)\n"
        "already = {name.split('.')[0] for name in sys.modules}\n"
        f"for name in {imports!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules} - already)))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(run.stdout))


def test_importing_every_training_module_loads_no_web_stack():
    """transformers loads jinja2 for its chat templates, so jinja2 is measured beyond what
    torch, transformers and peft load by themselves; the others must not load at all."""
    training = training_modules()
    libraries = ["torch", "transformers", "peft", "tqdm"]
    assert loaded_after(training, before=libraries).isdisjoint(WEB_STACK)
    assert loaded_after(training).isdisjoint({"fastapi", "sqlalchemy", "celery"})


def test_importing_the_web_app_loads_no_torch():
    assert "torch" not in loaded_after(["app.web.main"])
    assert "transformers" not in loaded_after(["app.web.main"])


def test_the_runtime_check_sees_what_a_module_loads():
    assert "sqlalchemy" in loaded_after(["app.models"])
