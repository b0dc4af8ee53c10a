"""Export of torch model modules as the lab's one self-contained ``pytorch_cnn.py``.

The exported file is the model modules' own source (so what the tests cover is what users get), their
imports merged, with the module-level default configurations (``MYNET_CFG = MyNetCfg()``) replaced by the
winning ones, so the lab's ``MyNet()`` with no arguments builds the winner.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from . import finetune, mynet
from .finetune import FinetuneCfg
from .mynet import MyNetCfg

__all__ = ["pytorch_cnn_source", "standalone_source", "submission_source"]

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


_SUBMISSION_HEADER = '''"""pytorch_cnn.py: the lab's network file, exported by rpztune for the submission zip.

``MyNet()`` builds the tuned FashionMNIST CNN (``MYNET_CFG``; weights in ``model.pt``), ``FinetuneNet()`` the
tuned Dogs-vs-Cats network (``FINETUNE_CFG``, built without downloading anything; weights in
``finetuned.pt``), ``classify(model, x)`` returns predicted classes. Restore weights with
``model.load_state_dict(torch.load("model.pt", weights_only=True))``.
"""
'''


# MINIMAL STAND-IN (branch ``submit``): the plain-torch FinetuneNet and the final version of this function
# come from another branch; on merge, take that version. Only ``plain_torch=False`` is supported here.
def submission_source(mynet_cfg: MyNetCfg, finetune_cfg: FinetuneCfg, *, plain_torch: bool) -> str:
    """The text of ONE ``pytorch_cnn.py`` holding ``MyNet`` (``MyNet()`` builds ``mynet_cfg``),
    ``FinetuneNet`` (``FinetuneNet()`` builds ``finetune_cfg``) and ``classify``.

    Args:
        mynet_cfg: The MyNet winner's architecture.
        finetune_cfg: The FinetuneNet winner's architecture.
        plain_torch: Write FinetuneNet in plain torch (no timm import); not built in this version.

    Raises:
        NotImplementedError: for ``plain_torch=True``.
    """
    if plain_torch:
        raise NotImplementedError("a plain-torch FinetuneNet (no timm) is not built in this version")
    return _merge(
        [(mynet.__name__, inspect.getsource(mynet)), (finetune.__name__, inspect.getsource(finetune))],
        {"MYNET_CFG": mynet_cfg, "FINETUNE_CFG": finetune_cfg},
        header=_SUBMISSION_HEADER,
    )


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
    return _merge([(m.__name__, inspect.getsource(m)) for m in modules], defaults, header=header)


def _merge(sources: Sequence[tuple[str, str]], defaults: Mapping[str, Any], *, header: str) -> str:
    """Merge ``(module name, source)`` pairs into one file (see :func:`standalone_source`).

    A top-level name defined by more than one module keeps its first definition's name; the later modules'
    copies (and every use of them in those modules) are renamed ``<MODULE>_<NAME>``, and the modules'
    ``__all__`` lists are merged into one.
    """
    imports: dict[str, None] = {}
    bodies = []
    exported: list[str] = []
    found: set[str] = set()
    defined: set[str] = set()
    for name, source in sources:
        source, renamed = _rename_clashes(source, defined, prefix=name.rsplit(".", 1)[-1].upper())
        defined |= _top_level_names(source)
        body, module_imports, names, public = _split(source, defaults, drop_all=len(sources) > 1)
        imports.update(dict.fromkeys(module_imports))
        exported += [renamed.get(n, n) for n in public]
        found |= names
        bodies.append(body)
    missing = set(defaults) - found
    if missing:
        raise ValueError(f"no top-level assignment of {sorted(missing)} in {[n for n, _ in sources]}")
    lines = ["from __future__ import annotations", "", *_sorted_imports(imports)]
    if len(sources) > 1:
        lines += ["", f"__all__ = {json.dumps(sorted(dict.fromkeys(exported)))}"]
    return f"{header}\n" + "\n".join(lines) + "\n\n" + "\n\n\n".join(bodies) + "\n"


def _top_level_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names - {"__all__"}


def _rename_clashes(source: str, taken: set[str], *, prefix: str) -> tuple[str, dict[str, str]]:
    """Rename the top-level names of ``source`` already in ``taken``, everywhere in ``source``.

    A whole-word textual rename, so uses inside f-strings (one token before Python 3.12) follow too.
    """
    clashes = sorted(_top_level_names(source) & taken)
    renamed = {n: f"_{prefix}{n}" if n.startswith("_") else f"{prefix}_{n}" for n in clashes}
    for old, new in renamed.items():
        source = re.sub(rf"(?<![\w.]){re.escape(old)}\b", new, source)
    return source, renamed


def _split(
    source: str, defaults: Mapping[str, Any], *, drop_all: bool = False
) -> tuple[str, list[str], set[str], list[str]]:
    """A module's body without docstring and imports (defaults rebound; ``__all__`` dropped when
    ``drop_all``), its imports, the names rebound, its ``__all__``."""
    tree = ast.parse(source)
    lines = source.splitlines()
    replaced: dict[int, str] = {}
    dropped: set[int] = set()
    imports, names, public = [], set(), []
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
            if name == "__all__":
                public = list(ast.literal_eval(node.value))
                if drop_all:
                    dropped.update(span)
            elif name in defaults:
                dropped.update(span)
                replaced[node.lineno - 1] = f"{name} = {_literal(defaults[name])}"
                names.add(name)
    out = [replaced.get(i, line) for i, line in enumerate(lines) if i not in dropped or i in replaced]
    body = "\n".join(out)
    while "\n\n\n\n" in body:
        body = body.replace("\n\n\n\n", "\n\n\n")
    return body.strip("\n"), imports, names, public


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
