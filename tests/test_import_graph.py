"""berth's Python modules import in one direction: no cycle, not even through an import
inside a function (a lazy import hides a cycle until the day both ends load first)."""
import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")


def modules():
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "berth")):
        for name in files:
            if name.endswith(".py") and "_source" not in folder:
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


def import_edges(found):
    """{module: modules of berth it imports anywhere}. ``from . import x`` counts as an
    import of the submodule x where x is one, else of the package."""
    edges = {m: set() for m in found}
    for module, path in found.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - max(node.level - 1, 0)]
                target = ".".join(base + [node.module] if node.module else base) if node.level else node.module
                if not target or not target.startswith("berth"):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in found:
                        edges[module].add(sub)
                    elif target in found and target != module and alias.name != "_core":
                        edges[module].add(target)
            elif isinstance(node, ast.Import):
                edges[module].update(a.name for a in node.names if a.name in found and a.name != module)
    return edges


def cycle_from(edges, start):
    """A path start -> ... -> start, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(edges[node]):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_no_import_cycles():
    edges = import_edges(modules())
    cycles = [c for c in (cycle_from(edges, m) for m in sorted(edges)) if c]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_the_check_sees_a_lazy_cycle():
    edges = {"berth.a": {"berth.b"}, "berth.b": {"berth.a"}, "berth.c": set()}
    assert cycle_from(edges, "berth.a") == ["berth.a", "berth.b", "berth.a"]
    assert cycle_from(edges, "berth.c") is None
    found = modules()
    assert "berth.serving.control" in found and "berth.serving.cli" in import_edges(found)["berth.serving"]
