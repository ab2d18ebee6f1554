"""The package's parts import only downward, and no module imports another in a cycle (function-level imports
included): config < store < search < teacher < learn < evaluation < loop, tag < cli."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "lmtx"
# a part: a subpackage, or a top-level module; its layer: what it may import (its own layer's other parts: no)
LAYERS = {
    "version": 0,
    "config": 0,
    "store": 1,
    "search": 2,
    "teacher": 3,
    "learn": 4,
    "evaluation": 5,
    "loop": 6,
    "tag": 6,
    "api": 7,
    "cli": 8,
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mod: str, path: Path, known: set[str]) -> set[str]:
    """lmtx modules imported anywhere in the file (names relative to lmtx; '' = the package root)."""
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    pkg = [x for x in pkg if x]
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg[: len(pkg) - (n.level - 1)] if n.level > 1 else pkg
                target = ".".join(base + ([n.module] if n.module else []))
            elif n.module and (n.module == "lmtx" or n.module.startswith("lmtx.")):
                target = n.module[5:]
            else:
                continue
            subs = [f"{target}.{a.name}" if target else a.name for a in n.names]
            hit = [s for s in subs if s in known]
            out.update(hit if hit else [target])
        elif isinstance(n, ast.Import):
            out.update(a.name[5:] for a in n.names if a.name.startswith("lmtx."))
    return out - {mod}


def _part(mod: str) -> str:
    return mod.split(".")[0] if mod else ""


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _modules()} - {""}
    assert parts <= set(LAYERS), f"parts without a layer in this test: {sorted(parts - set(LAYERS))}"


def test_parts_import_only_downward():
    mods = _modules()
    bad = []
    for mod, path in mods.items():
        if not mod:
            continue  # the package root exports the API; nothing imports it
        for t in _imports(mod, path, set(mods)):
            a, b = _part(mod), _part(t)
            if b == "":
                bad.append(f"{mod} imports the package root (lmtx/__init__.py)")
            elif a != b and LAYERS[b] >= LAYERS[a]:
                bad.append(f"{mod} (layer {LAYERS[a]}) imports {t} (layer {LAYERS[b]})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    mods = _modules()
    graph = {m: {t for t in _imports(m, p, set(mods)) if t in mods} for m, p in mods.items()}
    # a package's __init__ that re-exports its own modules is not a cycle with them
    for m in graph:
        graph[m] = {t for t in graph[m] if not (m and t.startswith(m + "."))}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in sorted(graph[m]):
            visit(t)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
