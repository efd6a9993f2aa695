"""Imports run one way (issue 27, item 4; ../shared/DESIGN.md, "Layout").

Every module under ``plugins/occreid`` is parsed with ``ast`` (nothing is imported, so no toolbox is needed);
every ``import`` / ``from ... import`` counts, at module level and inside functions alike (a lazy import is still
a dependency, only a later one). Relative imports are resolved against the importing module's package. An edge
goes to the most specific occreid module named: ``from occreid.evaluation import gallery`` is an edge to
``occreid.evaluation.gallery``, ``from occreid.fastreid import ReIDImageDataset`` an edge to the package
``occreid.fastreid`` (its ``__init__``). The parent packages Python runs on the way (``occreid``,
``occreid.evaluation``) are not edges: otherwise every package would form a cycle with each of its modules.

Checked:

1. no cycle: no strongly connected component of two or more occreid modules;
2. the FastReID glue (``occreid.fastreid.*``) never imports the TorchReID glue (``occreid.torchreid``);
3. the method floor (``occreid.layers``, ``occreid.losses``, ``occreid.data``, ``occreid.evaluation``) imports no
   toolbox: neither ``fastreid`` / ``torchreid`` nor occreid's glue for them.

No edge is left out: a submodule that imports a name its own package's ``__init__`` re-exports (``cli.py``:
``from occreid.fastreid import ReIDImageDataset``) counts like any other import, and is a cycle only if that
``__init__`` imports the submodule back, which none does today.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "plugins"
PACKAGE = "occreid"
FLOOR = ("occreid.layers", "occreid.losses", "occreid.data", "occreid.evaluation")
TOOLBOXES = ("fastreid", "torchreid", "occreid.fastreid", "occreid.torchreid")


def _within(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def _modules():
    """{dotted module name: (path, is_package)} of every .py file under plugins/occreid."""
    mods = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


MODULES = _modules()


def _imported_names(module, path, is_pkg):
    """(line, absolute dotted name) of every import in the module; ``from X import a`` gives ``X.a``
    (a submodule, or a name in X: resolved by the caller)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[:-(node.level - 1)]
                assert base, f"{path}:{node.lineno}: relative import beyond the top-level package"
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                yield node.lineno, base, alias.name


def _target(base, name):
    """The occreid module an import names (None for other packages): ``base.name`` when that is a module, else
    the longest prefix of ``base`` that is one."""
    if name is not None and f"{base}.{name}" in MODULES:
        return f"{base}.{name}"
    parts = base.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _graph():
    """{module: {imported occreid module: first line}} and {module: [(line, absolute name imported)]}."""
    edges, raw = {}, {}
    for module, (path, is_pkg) in MODULES.items():
        edges[module], raw[module] = {}, []
        for line, base, name in _imported_names(module, path, is_pkg):
            raw[module].append((line, base if name is None else f"{base}.{name}"))
            target = _target(base, name)
            if target is not None and target != module:
                edges[module].setdefault(target, line)
    return edges, raw


EDGES, RAW = _graph()


def _strongly_connected(edges):
    """Tarjan's algorithm (iterative): the strongly connected components of the graph."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp.append(member)
                        if member == node:
                            break
                    out.append(sorted(comp))
    return out


def test_graph_sees_the_package():
    """The parser finds the modules and the imports it is meant to check (guards against a test that passes
    because it reads nothing)."""
    assert {"occreid.fastreid.trainer", "occreid.evaluation.gallery", "occreid.torchreid.compat"} <= set(MODULES)
    trainer = EDGES["occreid.fastreid.trainer"]
    assert "occreid.fastreid.resume" in trainer            # relative, module level
    assert "occreid.fastreid.parsing_data" in trainer      # relative, inside a method
    assert "occreid.data.parsing" in trainer               # absolute, inside a method
    assert "occreid.data.parsers" in EDGES["occreid.torchreid.datasets"]  # `from occreid.data import parsers`
    assert any(name.startswith("fastreid.") for _, name in RAW["occreid.fastreid.trainer"])  # the toolbox itself


def test_no_import_cycle():
    cycles = [c for c in _strongly_connected(EDGES) if len(c) > 1]
    msgs = []
    for comp in cycles:
        members = set(comp)
        inner = [f"{a} -> {b} (line {line})" for a in comp for b, line in sorted(EDGES[a].items()) if b in members]
        msgs.append(f"cycle between {', '.join(comp)}: " + "; ".join(inner))
    assert not cycles, "\n".join(msgs)


def test_fastreid_glue_does_not_import_torchreid_glue():
    bad = [f"{m} line {line}: imports {name}" for m in sorted(RAW) if _within(m, "occreid.fastreid")
           for line, name in RAW[m] if _within(name, "occreid.torchreid")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("floor", FLOOR)
def test_method_floor_imports_no_toolbox(floor):
    bad = [f"{m} line {line}: imports {name}" for m in sorted(RAW) if _within(m, floor)
           for line, name in RAW[m] if any(_within(name, t) for t in TOOLBOXES)]
    assert not bad, "\n".join(bad)


def test_cycle_finder_on_a_known_graph():
    """The component search itself: a 3-cycle, a 2-cycle through a package, a chain and a self-contained node."""
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "p": {"p.m": 1}, "p.m": {"p": 1},
             "x": {"d": 1}}
    comps = sorted(c for c in _strongly_connected(graph) if len(c) > 1)
    assert comps == [["a", "b", "c"], ["p", "p.m"]]
