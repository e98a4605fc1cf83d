"""The import graph of the source tree: no cycles, and the core never imports a plugin package.

The graph is read from the source (AST), over ``seqcl`` and every shipped plugin
package ``plugins/seqcl_*``. Every import counts, top-level or inside a function
(a lazy import that closes a cycle is still a cycle: it only moves the failure
to run time); imports under ``if TYPE_CHECKING:`` do not run and are left out.
An edge goes to the module named (``from pkg import mod`` → ``pkg.mod``, ``from
pkg import name`` → ``pkg``), not to the parent packages Python also loads.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_modules() -> dict[str, Path]:
    """Dotted module name → file, for ``seqcl`` and ``plugins/seqcl_*``."""
    roots = [ROOT / "seqcl", *sorted(p for p in (ROOT / "plugins").glob("seqcl_*") if p.is_dir())]
    modules = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom, except in the body of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = node.orelse
        stack.extend(children)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a source module (None: outside the tree)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def imports(module: str, modules: dict[str, Path]) -> set[str]:
    """The source modules ``module`` imports; names outside the tree (torch, click …) are left out."""
    path = modules[module]
    targets: set[str | None] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(_known(alias.name, modules) for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[:len(package) - (node.level - 1)]
            base = ".".join([*package, base]) if base else ".".join(package)
        for alias in node.names:  # ``from pkg import mod`` imports pkg.mod; ``from pkg import name``, pkg
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in modules else _known(base, modules))
    return {t for t in targets if t is not None and t != module}


def external_imports(module: str, modules: dict[str, Path]) -> set[str]:
    """The top-level package of every absolute import of ``module``."""
    path = modules[module]
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {module: imports(module, modules) for module in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = import_graph()
    assert "seqcl.cli" in graph and "seqcl_sasrec.encoder" in graph  # the tree was found
    assert "seqcl.config" in graph["seqcl.cli"]  # and imports were resolved, lazy ones included
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_core_never_imports_a_plugin_package():
    modules = source_modules()
    plugins = {m.split(".")[0] for m in modules if m.startswith("seqcl_")}
    assert {"seqcl_sasrec", "seqcl_study"} <= plugins
    offenders = {m: sorted(n for n in external_imports(m, modules) if n.startswith("seqcl_"))
                 for m in modules if m == "seqcl" or m.startswith("seqcl.")}
    offenders = {m: names for m, names in offenders.items() if names}
    assert not offenders, f"the core imports plugin packages: {offenders}"


def test_the_checker_finds_a_cycle_and_resolves_relative_imports(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .x import f\n")
    (pkg / "x.py").write_text("def f():\n    from . import y\n")
    (pkg / "y.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import x\n"
                              "from pkg.x import f\n")
    modules = {"pkg": pkg / "__init__.py", "pkg.x": pkg / "x.py", "pkg.y": pkg / "y.py"}
    graph = {m: imports(m, modules) for m in modules}
    assert graph == {"pkg": {"pkg.x"}, "pkg.x": {"pkg.y"}, "pkg.y": {"pkg.x"}}
    assert cycles(graph) == [["pkg.x", "pkg.y"]]
