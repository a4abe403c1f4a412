"""Every operation of the OpenAPI description says what it does, in its handler's docstring.

FastAPI makes a handler's docstring the operation's description; a `description=` or `summary=`
in the route's decorator would override it, and the two would drift apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

WEB = Path(__file__).resolve().parents[4] / "app" / "web"
ROUTE_DECORATORS = {"get", "post", "put", "patch", "delete", "head", "options", "api_route"}
OVERRIDES = {"description", "summary"}


def route_declarations() -> list[tuple[str, ast.Call]]:
    """Where `app/web` declares a route, with the call: a handler's `@router.get(...)` (or
    another method's) decorator, or a call to `add_api_route`."""
    found = []
    for path in sorted(WEB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            calls = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                calls = [call for call in node.decorator_list if _calls(call, ROUTE_DECORATORS)]
            elif _calls(node, {"add_api_route"}):
                calls = [node]
            found += [(f"{path.relative_to(WEB)}:{call.lineno}", call) for call in calls]
    return found


def _calls(node: ast.AST, names: set[str]) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in names
    )


def test_every_operation_has_a_description(app):
    operations = app.openapi()["paths"]
    missing = [
        f"{method.upper()} {path}"
        for path, methods in operations.items()
        for method, operation in methods.items()
        if not operation.get("description", "").strip()
    ]
    assert sum(len(methods) for methods in operations.values()) > 50
    assert missing == [], "give these handlers a docstring for the API's users"


def test_no_route_passes_a_description_or_summary_to_its_decorator(app):
    declared = route_declarations()
    operations = sum(len(methods) for methods in app.openapi()["paths"].values())
    assert len(declared) >= operations  # the scan sees every route the document shows
    overriding = [
        f"{where}: {keyword.arg}="
        for where, call in declared
        for keyword in call.keywords
        if keyword.arg in OVERRIDES
    ]
    assert overriding == [], "say it in the handler's docstring instead"
