"""The declared layer order (DESIGN.md section 7): nothing imports a layer above it, no two modules import each other.

Imports are read with `ast` from every module of tvad_chat, heads, prompts and datasets_builder (and app.py):
module-level and function-level imports count alike. Every module must belong to a layer of LAYERS (a new
module fails here until it is placed).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tvad_chat", "heads", "prompts", "datasets_builder")

# Bottom up. A module may import its own layer and the layers below it. A name stands for the module and,
# except for the bare package "tvad_chat", everything under it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("tvad_chat", "tvad_chat.errors", "tvad_chat.video", "tvad_chat.motion", "tvad_chat.tracking",
                "tvad_chat.files", "tvad_chat.dtypes", "tvad_chat.executor")),
    ("heads and prompts", ("heads", "prompts")),
    ("model and profiles", ("tvad_chat.backbone", "tvad_chat.tiny", "tvad_chat.lora", "tvad_chat.scene")),
    # the whole model (backbone + heads) and its loading (tvad_chat.models: the checkpoint or the untrained
    # fallback), the heatmap sources it reads (AHD, scene profile, fusion), the evidence read from the heatmaps
    # and the answers composed from that evidence (tvad_chat.grounded); the optional stages on the scene analysis
    # (tvad_chat.stages: SAM2 masks, CLIP categories)
    ("pipeline and evidence", ("tvad_chat.pipeline", "tvad_chat.models", "tvad_chat.heatmap_sources",
                               "tvad_chat.evidence", "tvad_chat.grounded", "tvad_chat.stages")),
    ("chat engine and export", ("tvad_chat.chat", "tvad_chat.render", "tvad_chat.report")),
    ("eval and train", ("tvad_chat.eval", "tvad_chat.train", "tvad_chat.scan")),
    ("ui, cli and commands", ("tvad_chat.ui", "tvad_chat.cli", "tvad_chat.commands", "tvad_chat.__main__", "app")),
]
# Beside the engine: the data-making package imports only the ground floor and the prompts (and itself); of the
# engine's layers only the top one (the commands that run it) imports it.
BESIDE = "datasets_builder"
BESIDE_MAY_IMPORT = ("ground",)
BESIDE_MAY_IMPORT_PACKAGES = ("prompts",)
TOP = LAYERS[-1][0]

# Edges that break the order today, each in a file being reworked by another change; remove an edge as soon
# as its import is gone (the test fails on a listed edge that no longer exists, so the list cannot go stale).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def module_files() -> dict[str, Path]:
    files = {"app": ROOT / "app.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    return files


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that ``name`` imports anywhere in its file (a `from package import module` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> str:
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if name == prefix or (prefix != "tvad_chat" and name.startswith(prefix + ".")):
                return layer
    if name.split(".")[0] == BESIDE:
        return BESIDE
    raise AssertionError(f"{name} belongs to no layer: add it to LAYERS in tests/test_layers.py")


def allowed(importer: str, imported: str) -> bool:
    order = [layer for layer, _ in LAYERS]
    src, dst = layer_of(importer), layer_of(imported)
    if src == BESIDE:
        return dst in (BESIDE, *BESIDE_MAY_IMPORT) or imported.split(".")[0] in BESIDE_MAY_IMPORT_PACKAGES
    if dst == BESIDE:
        return src == TOP
    return order.index(dst) <= order.index(src)


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for name in import_graph():
        try:
            layer_of(name)
        except AssertionError:
            unplaced.append(name)
    assert not unplaced, f"modules without a layer (add them to LAYERS): {unplaced}"


def test_nothing_imports_a_layer_above_it() -> None:
    graph = import_graph()
    upward = {(src, dst) for src, targets in graph.items() for dst in targets if not allowed(src, dst)}
    unexpected = sorted(upward - KNOWN_VIOLATIONS)
    assert not unexpected, "imports of a higher layer:\n" + "\n".join(
        f"  {src} ({layer_of(src)}) imports {dst} ({layer_of(dst)})" for src, dst in unexpected)
    stale = sorted(KNOWN_VIOLATIONS - upward)
    assert not stale, f"KNOWN_VIOLATIONS lists edges that are gone; remove them: {stale}"


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "modules that import each other (directly or around a circle): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_the_checker_sees_upward_imports_and_cycles(tmp_path: Path) -> None:
    """The rules themselves: a function-level import counts, relative imports resolve, a circle is found."""
    pkg = tmp_path / "tvad_chat"
    (pkg / "eval").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "video.py").write_text("def f():\n    from tvad_chat.eval import frames\n")
    (pkg / "eval" / "__init__.py").write_text("")
    (pkg / "eval" / "frames.py").write_text("from ..video import f\n")
    known = {"tvad_chat", "tvad_chat.video", "tvad_chat.eval", "tvad_chat.eval.frames"}
    video = imports_of("tvad_chat.video", pkg / "video.py", known)
    frames = imports_of("tvad_chat.eval.frames", pkg / "eval" / "frames.py", known)
    assert video == {"tvad_chat.eval.frames"} and frames == {"tvad_chat.video"}
    assert not allowed("tvad_chat.video", "tvad_chat.eval.frames")
    assert allowed("tvad_chat.eval.frames", "tvad_chat.video")
    assert not allowed("datasets_builder.corpus", "tvad_chat.backbone")
    assert allowed("datasets_builder.corpus", "prompts.loader") and not allowed("datasets_builder.qa", "heads.ahd")
    assert not allowed("tvad_chat.chat", "datasets_builder.corpus") and not allowed("tvad_chat.eval.runner", "datasets_builder.qa")
    assert allowed("tvad_chat.commands.corpus", "datasets_builder.corpus")
    assert cycles({"tvad_chat.video": video, "tvad_chat.eval.frames": frames}) == [
        ["tvad_chat.eval.frames", "tvad_chat.video"]]
