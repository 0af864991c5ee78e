"""The package's import graph, read from the source with ast: no circles, no import that reaches up a layer,
and no late import of the package's own modules."""
from __future__ import annotations

import ast
from pathlib import Path

import order_embedding

PACKAGE = Path(order_embedding.__file__).parent

#: Layers from the bottom; a module may import its own layer or lower ones only (docs/architecture.md).
LAYERS = (
    ("kernels", "runs", "data", "options"),
    ("vocab", "batching", "measures"),
    ("backbones", "vision", "model"),
    ("loss", "optim", "legacy"),
    ("inference",),
    ("evaluation", "report", "relevance"),
    ("train", "loop", "distributed"),
    ("demo", "hypernym", "entailment"),
    ("index",),
    ("server",),
    ("cli", "__init__", "__main__"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def own_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported package module, line, imported inside a function) for every import of the package's own code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1] if node.level > 1 else package
            target = ".".join([*base, node.module] if node.module else base)
            names = [target] if node.module else [f"{target}.{a.name}".strip(".") for a in node.names]
            found += [(n or "__init__", node.lineno, id(node) in nested) for n in names]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [(m.removeprefix("order_embedding.") or "__init__", node.lineno, id(node) in nested)
                      for m in mods if m == "order_embedding" or m.startswith("order_embedding.")]
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for m, p in modules.items():
        for target, _, _ in own_imports(p):
            while target not in modules and "." in target:  # "from .kernels import cpu" names a module or a member
                target = target.rsplit(".", 1)[0]
            if target in modules and target != m:
                edges[m].add(target)
    return edges


def test_the_parser_sees_relative_and_absolute_imports(tmp_path) -> None:
    edges = graph()
    assert "measures" in edges["loss"] and "kernels" in edges["measures"]
    assert "kernels.common" in edges["kernels.cpu"] and "index.layout" in edges["index.search"]


def test_no_import_reaches_up_a_layer() -> None:
    upward = [f"{m} -> {t}" for m, targets in graph().items() for t in targets if layer(t) > layer(m)]
    assert upward == []


def test_no_import_circle() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


#: Late imports that stand for an optional dependency: the server needs fastapi and uvicorn.
LATE_ALLOWED = {("cli.serve", "server")}


def test_own_modules_are_imported_at_the_top() -> None:
    late = [f"{module_name(p)}:{line} imports {t}" for p in PACKAGE.rglob("*.py")
            for t, line, nested in own_imports(p) if nested and (module_name(p), t) not in LATE_ALLOWED]
    assert late == []
