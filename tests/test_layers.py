"""The package's imports run one way (docs/architecture.md): no module imports a layer above
its own, inference never imports training, and there is no import circle.

Every import counts, those inside functions and under TYPE_CHECKING included: they still tie
the modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "difflm"

#: Layers from the bottom up. A module may import its own layer and those below it.
LAYERS: list[tuple[str, ...]] = [
    ("checkpoint", "config"),
    ("text",),
    ("diffusion",),
    ("model",),
    ("run", "hub", "eval"),
    ("objectives",),
    ("sampling",),
    ("control",),
    ("loop",),
    ("train", "train_classifier", "pipeline"),
    ("cli", "serve", "figures"),
]
#: Modules of one layer that must not import each other (inference never loads the trainer).
APART = {("pipeline", "train"), ("pipeline", "train_classifier")}


def _modules(root: Path = SRC) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(("difflm",) + parts).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _top(module: str) -> str:
    """The first name under difflm: its layer's key ("" for the package's own __init__)."""
    return module.split(".")[1] if "." in module else ""


def _layer(module: str) -> int:
    for rank, names in enumerate(LAYERS):
        if _top(module) in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS and to docs/architecture.md")


def _graph(root: Path = SRC) -> dict[str, set[str]]:
    modules = _modules(root)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _upward(graph: dict[str, set[str]]) -> list[str]:
    upward = []
    for module, targets in graph.items():
        if module == "difflm":  # the package's front door re-exports the pipeline
            continue
        for target in targets:
            if target != "difflm" and _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
            if (_top(module), _top(target)) in APART or (_top(target), _top(module)) in APART:
                upward.append(f"{module} -> {target} (kept apart)")
    return sorted(upward)


def test_every_import_runs_down_the_layers():
    upward = _upward(_graph())
    assert not upward, "imports that run up a layer:\n" + "\n".join(upward)


def test_no_module_imports_the_package_front_door():
    # `import difflm` loads the pipeline; a library module that did so would depend on every layer.
    offenders = [
        m for m, targets in _graph().items() if "difflm" in targets and m != "difflm" and _top(m) not in LAYERS[-1]
    ]
    assert not offenders, offenders


def test_there_is_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, circles


def test_the_check_finds_an_upward_import_and_a_lazy_one(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "sampling").mkdir()
    (tmp_path / "model" / "net.py").write_text("def f():\n    from difflm.sampling.step import g\n")
    (tmp_path / "sampling" / "step.py").write_text("from difflm.model.net import f\n")
    (tmp_path / "pipeline.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import difflm.train\n"
    )
    (tmp_path / "train.py").write_text("")
    assert _upward(_graph(tmp_path)) == [
        "difflm.model.net -> difflm.sampling.step",
        "difflm.pipeline -> difflm.train (kept apart)",
    ]
