"""The codebase's shape, as its imports draw it: dependencies point one way, pipeline -> transforms -> contracts,
and no module imports itself back through others (no cycle). Every import counts, also those inside functions."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {'contracts': 0, 'transforms': 1, 'pipeline': 2}


def modules():
    out = {}
    for pkg in LAYERS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith('.py'):
                    path = os.path.join(dirpath, f)
                    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                    out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = path
    return out


MODULES = modules()


def imports_of(name, path):
    """Project modules imported by module `name` (absolute imports; `from pkg import mod` resolves to the
    module where there is one)."""
    tree = ast.parse(open(path, encoding='utf-8').read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` is an import of pkg.mod; `from mod import name` of mod
            targets = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in MODULES else node.module
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition('.')[0]
            if t and t != name and t.split('.')[0] in LAYERS:
                found.add(t)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def _layer(mod):
    return LAYERS[mod.split('.')[0]]


def test_the_graph_is_read():
    assert 'transforms.sink.write' in GRAPH and 'contracts.compiler' in GRAPH
    assert 'contracts.columns' in GRAPH['contracts.compiler']


@pytest.mark.parametrize('name', sorted(GRAPH))
def test_no_import_goes_up_a_layer(name):
    up = sorted(m for m in GRAPH[name] if _layer(m) > _layer(name))
    assert not up, f'{name} imports {up}: pipeline -> transforms -> contracts, never back'


def test_no_cycle():
    """Tarjan's strongly connected components of the module graph: every component is one module."""
    index, low, stack, on, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))
    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f'import cycles: {cycles}'


def test_only_the_sql_layer_names_a_dialect():
    """Dialect behaviour stays inside the dialects: no module outside transforms/sql branches on a dialect name."""
    import re
    pattern = re.compile(r"""(dialect(_name)?|\.name)\s*[!=]=\s*['"](sqlite|postgresql|mssql)['"]""")
    offenders = []
    for name, path in MODULES.items():
        if name.startswith('transforms.sql'):
            continue
        for n, line in enumerate(open(path, encoding='utf-8'), 1):
            if pattern.search(line):
                offenders.append(f'{name}:{n}')
    assert not offenders, offenders
