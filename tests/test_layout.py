"""Is the code laid out so a newcomer can follow it? Imports read with `ast`, nothing run.

Two rules for every module of `xipmodel/`:
* no module imports another module's private (`_underscore`) name, nor reaches for one
  through a module it imported (`module._name`);
* modules import each other without cycles, except the circles the kernel's own files
  make, each documented at the top of both files (DOCUMENTED_CYCLES).

Imports under `if TYPE_CHECKING:` are for the type checker only and never run: they are
allowed to point back (a handler names the Guest it is given).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "xipmodel"

# mm/page_alloc.c's direct reclaim calls mm/vmscan.c, whose shrink_folio_list frees the
# pages it reclaimed through mm/page_alloc.c: the kernel's own circle.
DOCUMENTED_CYCLES = {frozenset({"xipmodel.mm.page_alloc", "xipmodel.mm.vmscan"})}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (module level or in a function), in order."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def project_module(name: str) -> str | None:
    """The project module `name` is, or None for anything outside xipmodel."""
    return name if name in MODULES else None


def edges() -> dict[str, set[str]]:
    """module → the project modules it imports at run time."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in runtime_imports(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                source = resolve(module, node)
                # `from pkg import mod` imports the submodule pkg.mod.
                targets = [source] + [f"{source}.{a.name}" for a in node.names]
            for target in targets:
                dep = project_module(target)
                if dep is not None and dep != module and not module.startswith(dep + "."):
                    graph[module].add(dep)
    return graph


def test_no_module_imports_a_private_name_of_another() -> None:
    """Cross-module calls go through public names: `from m import _x` and `m._x` are refused."""
    problems = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        imported_modules: dict[str, str] = {}  # local alias → project module
        for node in runtime_imports(tree):
            if isinstance(node, ast.ImportFrom):
                source = resolve(module, node)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in MODULES:
                        imported_modules[alias.asname or alias.name] = sub
                    elif alias.name.startswith("_") and source in MODULES:
                        problems.append(f"{module}: imports {source}.{alias.name}")
            else:
                for alias in node.names:
                    if alias.name in MODULES and alias.asname:
                        imported_modules[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in imported_modules):
                problems.append(f"{module}:{node.lineno}: uses "
                                f"{imported_modules[node.value.id]}.{node.attr}")
    assert not problems, "private names used across modules:\n" + "\n".join(problems)


def private_names_defined(tree: ast.Module) -> set[str]:
    """The `_names` a module defines: functions, classes, globals and attributes it sets."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_module_reaches_into_another_modules_objects() -> None:
    """`guest._reclaim_page(...)` from filemap is a private method of mm/guest.py: refused.

    A `_name` that only another project module defines, used on any object but `self` or
    `cls`, is a reach into that module's private state. (Third-party privates, such as
    plotly's, are not this test's business.)
    """
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in MODULES.items()}
    defined = {m: private_names_defined(t) for m, t in trees.items()}
    problems = []
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            owners = [m for m, names in defined.items() if node.attr in names]
            if owners and module not in owners:
                problems.append(f"{module}:{node.lineno}: {ast.unparse(node)} "
                                f"(private to {', '.join(owners)})")
    assert not problems, "private state reached across modules:\n" + "\n".join(problems)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            connect(v)
    return found


def test_import_cycles_are_only_the_documented_ones() -> None:
    """Modules import each other in a circle only where the kernel's files do, and say so."""
    graph = edges()
    unexpected = [c for c in cycles(graph) if frozenset(c) not in DOCUMENTED_CYCLES]
    assert not unexpected, "import cycles: " + "; ".join(" ↔ ".join(c) for c in unexpected)
    for pair in DOCUMENTED_CYCLES:
        for module in pair:
            (other,) = pair - {module}
            doc = ast.get_docstring(ast.parse(MODULES[module].read_text())) or ""
            assert other.rsplit(".", 1)[1] in doc, (
                f"{module} imports {other} in a circle: its docstring must say so")


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above could fail: a two-module circle is found, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_package_says_what_is_inside() -> None:
    """Each folder's __init__ has a docstring naming every module beside it."""
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init}: no docstring"
        for sibling in sorted(init.parent.iterdir()):
            name = sibling.stem if sibling.suffix == ".py" else sibling.name
            if sibling.name in ("__init__.py", "__main__.py", "__pycache__", "py.typed") \
                    or not (sibling.suffix == ".py" or (sibling / "__init__.py").exists()):
                continue
            assert name in doc, f"{init}: the docstring does not mention {name}"
