"""Export of torch model modules as the lab's one self-contained ``pytorch_cnn.py``.

The exported file is the model modules' own source (so what the tests cover is what users get), their
imports merged, with the module-level default configurations (``MYNET_CFG = MyNetCfg()``) replaced by the
winning ones, so the lab's ``MyNet()`` with no arguments builds the winner.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from . import mynet
from .mynet import MyNetCfg

__all__ = ["pytorch_cnn_source", "standalone_source"]

_HEADER = '''"""pytorch_cnn.py: the lab's network file, exported by rpztune.

``MyNet()`` builds the tuned architecture (``MYNET_CFG``); restore its weights with
``model.load_state_dict(torch.load("model.pt", weights_only=True))``. ``classify(model, x)`` returns the
predicted classes of a ``[B, 1, 28, 28]`` batch of ``ToTensor()`` images. Needs only torch.
"""
'''


def pytorch_cnn_source(mynet_cfg: MyNetCfg) -> str:
    """The text of a ``pytorch_cnn.py`` whose ``MyNet()`` builds ``mynet_cfg``.

    Example:
        >>> Path("pytorch_cnn.py").write_text(pytorch_cnn_source(MyNetCfg(channels=(16,))))  # doctest: +SKIP
    """
    return standalone_source([mynet], {"MYNET_CFG": mynet_cfg}, header=_HEADER)


def standalone_source(modules: Sequence[ModuleType], defaults: Mapping[str, Any], *, header: str) -> str:
    """Merge ``modules`` into one file, setting each top-level ``NAME = ...`` of ``defaults`` to its value.

    Args:
        modules: Modules importing only the standard library and third-party packages (relative imports
            of each other are dropped: the merged file defines those names itself).
        defaults: Top-level names to rebind, with values whose ``repr`` is valid Python (dataclasses).
        header: The file's docstring.

    Raises:
        ValueError: when a name of ``defaults`` is not assigned at the top level of any module.
    """
    imports: dict[str, None] = {}
    bodies = []
    found: set[str] = set()
    for module in modules:
        body, module_imports, names = _split(inspect.getsource(module), defaults)
        imports.update(dict.fromkeys(module_imports))
        found |= names
        bodies.append(body)
    missing = set(defaults) - found
    if missing:
        raise ValueError(f"no top-level assignment of {sorted(missing)} in {[m.__name__ for m in modules]}")
    lines = ["from __future__ import annotations", "", *_sorted_imports(imports)]
    return f"{header}\n" + "\n".join(lines) + "\n\n" + "\n\n\n".join(bodies) + "\n"


def _split(source: str, defaults: Mapping[str, Any]) -> tuple[str, list[str], set[str]]:
    """A module's body without docstring and imports (defaults rebound), its imports, the names rebound."""
    tree = ast.parse(source)
    lines = source.splitlines()
    replaced: dict[int, str] = {}
    dropped: set[int] = set()
    imports, names = [], set()
    for position, node in enumerate(tree.body):
        span = range(node.lineno - 1, node.end_lineno or node.lineno)
        if isinstance(node, ast.Import | ast.ImportFrom) or (position == 0 and _is_docstring(node)):
            dropped.update(span)
            if isinstance(node, ast.Import) or (
                isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__"
            ):
                imports.append(ast.unparse(node))
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            name = getattr(node.targets[0], "id", None)
            if name in defaults:
                dropped.update(span)
                replaced[node.lineno - 1] = f"{name} = {_literal(defaults[name])}"
                names.add(name)
    out = [replaced.get(i, line) for i, line in enumerate(lines) if i not in dropped or i in replaced]
    body = "\n".join(out)
    while "\n\n\n\n" in body:
        body = body.replace("\n\n\n\n", "\n\n\n")
    return body.strip("\n"), imports, names


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _literal(value: Any) -> str:
    """``repr`` of a dataclass instance spread over lines, one field per line; checked to parse."""
    text = repr(value)
    fields = getattr(value, "__dataclass_fields__", None)
    if fields:
        items = "".join(f"    {name}={_repr(getattr(value, name))},\n" for name in fields)
        text = f"{type(value).__name__}(\n{items})"
    ast.parse(text)
    return text


def _repr(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)  # double quotes, like ruff format


def _sorted_imports(imports: dict[str, None]) -> list[str]:
    """Standard library first, then third party; ``import`` before ``from``, like isort."""

    def key(line: str) -> tuple[bool, bool, str]:
        top_level = line.split()[1].split(".")[0]
        return top_level not in sys.stdlib_module_names, line.startswith("from "), line.lower()

    ordered = sorted(imports, key=key)
    sections = [[line for line in ordered if not key(line)[0]], [line for line in ordered if key(line)[0]]]
    return [line for section in sections if section for line in [*section, ""]][:-1]
