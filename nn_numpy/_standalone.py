"""Export of the layers, losses and model I/O as one self-contained ``numpy_nn.py`` (the lab's file)."""

from __future__ import annotations

import ast
import inspect
import sys

from . import _io, _layers, _losses

_EXPORTED_MODULES = (_layers, _losses, _io)
_PACKAGE = __name__.split(".")[0]

_HEADER = '''"""numpy_nn.py: a fully-connected network in pure NumPy, exported by rpztune.

Contents (the RPZ lab's interface: forward, backward, params, grads):
    Layers: Linear, ReLU, LeakyReLU, Sigmoid, Tanh, and initial_weights.
    Losses: SE (squared error), BCE (binary cross-entropy).
    Models as lists of layers: build_mlp, predict, save_model, load_model (.npz files).

Needs only NumPy and the Python standard library.
"""
'''


def standalone_source() -> str:
    """Returns the text of a self-contained ``numpy_nn.py``.

    The file is a docstring, the deduplicated imports of the exported modules (``from __future__ import
    annotations`` first), then the bodies of ``_layers.py``, ``_losses.py`` and ``_io.py`` without their
    docstrings and imports; imports from this package are dropped, as their names are defined in the file.

    Returns:
        Python source that imports with only NumPy installed.

    Example:
        >>> from pathlib import Path
        >>> Path("numpy_nn.py").write_text(standalone_source())  # doctest: +SKIP
    """
    imports: dict[str, None] = {}  # ordered set
    bodies = []
    for module in _EXPORTED_MODULES:
        body, module_imports = _split_module(inspect.getsource(module))
        imports.update(dict.fromkeys(module_imports))
        name = module.__name__.rsplit(".", 1)[-1]
        gap = "\n\n\n" if body.startswith(("class ", "def ", "@")) else "\n\n"
        bodies.append(f"# {'-' * 30} {name[1:]} (from {_PACKAGE}/{name}.py) {'-' * 30}{gap}{body}")
    header_imports = "\n".join(["from __future__ import annotations", "", *sorted_imports(imports)])
    return f"{_HEADER}\n{header_imports}\n\n" + "\n\n\n".join(bodies) + "\n"


def _split_module(source: str) -> tuple[str, list[str]]:
    """Splits a module into its body (no docstring, no top-level imports) and its external imports."""
    tree = ast.parse(source)
    lines = source.splitlines()
    dropped: set[int] = set()
    imports = []
    for position, node in enumerate(tree.body):
        is_docstring = (
            position == 0
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        )
        if not (is_docstring or isinstance(node, (ast.Import, ast.ImportFrom))):
            continue
        dropped.update(range(node.lineno - 1, node.end_lineno or node.lineno))
        if isinstance(node, ast.ImportFrom) and (
            node.level > 0 or node.module == "__future__" or (node.module or "").split(".")[0] == _PACKAGE
        ):
            continue
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == _PACKAGE for alias in node.names):
            raise ValueError(f"cannot export `{ast.unparse(node)}`: use `from .module import name` instead.")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(ast.unparse(node))
    body = "\n".join(line for i, line in enumerate(lines) if i not in dropped)
    while "\n\n\n\n" in body:
        body = body.replace("\n\n\n\n", "\n\n\n")
    return body.strip("\n"), imports


def sorted_imports(imports: dict[str, None]) -> list[str]:
    """Import lines ordered like isort: standard library, then third party; ``import`` before ``from``
    (also for the exported ``pytorch_cnn.py``: ``models/_standalone.py``)."""

    def key(line: str) -> tuple[bool, bool, str]:
        top_level = line.split()[1].split(".")[0]
        return top_level not in sys.stdlib_module_names, line.startswith("from "), line.lower()

    ordered = sorted(imports, key=key)
    sections = [[line for line in ordered if not key(line)[0]], [line for line in ordered if key(line)[0]]]
    return [line for section in sections if section for line in [*section, ""]][:-1]
