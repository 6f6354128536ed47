"""The package's import order (docs/architecture.md) is what the code does: no module imports a
module of a higher layer, at the top of the file or inside a function. A new module must be given
a layer here (the test names any module that has none)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "compactbert"

# Bottom to top. Modules of one layer may import each other; each imports only its layer and below.
LAYERS = [
    ["errors", "options", "devices", "registry", "encoding", "logs"],  # leaves: no model knowledge
    ["nn"],  # layers, encoder, heads, kernels: read only an EncoderSpec
    ["io"],  # Hub resolution, weight files, key-table machinery
    ["config"],  # BaseConfig, AutoConfig (through the registry)
    ["families"],  # one module per family, each registering its descriptor
    ["models"],  # the base model with loading and saving, task models, Auto factories
    ["tokenization", "tokenizer_files"],
    ["tasks"],  # per-task pre- and post-processing, shared by pipelines and training
    ["sentence", "pipelines", "export", "batch"],
    ["training"],
    ["cli", "cli_training", "cli_batch", "__main__", "bench", "peers", "quality", "synthetic", ""],  # entry points, the package itself
]


def _layer(module: str) -> int | None:
    """The layer of a dotted module name under compactbert ("" is the package)."""
    top = module.split(".")[0]
    return next((n for n, names in enumerate(LAYERS) if top in names), None)


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module under compactbert) for every import of the package in the file."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "compactbert":
                target = node.module[len("compactbert."):] if "." in node.module else ""
            else:
                continue
            names = [target] if node.module else [f"{target}.{a.name}".strip(".") for a in node.names]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name[len("compactbert."):] if "." in a.name else "")
                      for a in node.names if a.name.split(".")[0] == "compactbert"]
    return found


def test_every_module_has_a_layer():
    unplaced = [_module(p) for p in PACKAGE.rglob("*.py") if _layer(_module(p)) is None]
    assert not unplaced, f"give these modules a layer in tests/test_layers.py: {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _layer(_module(path))
        for line, target in _imports(path):
            if _layer(target) is not None and _layer(target) > here:
                upward.append(f"compactbert/{path.relative_to(PACKAGE)}:{line} imports {target or 'compactbert'}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import():
    """The parser finds relative imports inside functions, and absolute ones (the test above can fail)."""
    found = _imports_in("def f():\n    from ..models.modeling import ForMaskedLM\nimport compactbert.cli\n", "nn")
    assert sorted(found) == [(2, "models.modeling"), (3, "cli")]
    assert _layer("models.modeling") > _layer("nn.layers") and _layer("cli") > _layer("nn")
