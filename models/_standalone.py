"""Export of torch model modules as the lab's one self-contained ``pytorch_cnn.py``.

The exported file is the model modules' own source (so what the tests cover is what users get), their
imports merged, with the module-level default configurations (``MYNET_CFG = MyNetCfg()``) replaced by the
winning ones, so the lab's ``MyNet()`` with no arguments builds the winner. A plain-torch ``FinetuneNet``
takes its backbone from ``efficientnet_lite`` instead of ``timm_backbone`` (the same names, no timm).
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from nn_numpy import sorted_imports

from . import efficientnet_lite, finetune, mynet, prediction, timm_backbone
from .finetune import FinetuneCfg
from .mynet import MyNetCfg

__all__ = [
    "config_literal",
    "finetune_modules",
    "pytorch_cnn_source",
    "standalone_source",
    "submission_source",
]

_HEADER = '''"""pytorch_cnn.py: the lab's network file, exported by rpztune.

``MyNet()`` builds the tuned architecture (``MYNET_CFG``); restore its weights with
``model.load_state_dict(torch.load("model.pt", weights_only=True))``. ``classify(model, x)`` returns the
predicted classes of a ``[B, 1, 28, 28]`` batch of ``ToTensor()`` images. Needs only torch.
"""
'''
_SUBMISSION_HEADER = '''"""pytorch_cnn.py: the lab's networks, exported by rpztune.

``MyNet()`` builds the tuned FashionMNIST CNN (``MYNET_CFG``; weights: ``model.pt``), ``classify(model, x)``
returns the predicted classes of a ``[B, 1, 28, 28]`` batch of ``ToTensor()`` images. ``FinetuneNet()``
builds the tuned Dogs-vs-Cats net (``FINETUNE_CFG``; weights: ``finetuned.pt``), nothing is downloaded.
Restore weights with ``model.load_state_dict(torch.load(path, weights_only=True))``. {needs}
"""
'''


def pytorch_cnn_source(mynet_cfg: MyNetCfg) -> str:
    """The text of a ``pytorch_cnn.py`` whose ``MyNet()`` builds ``mynet_cfg``.

    Example:
        >>> Path("pytorch_cnn.py").write_text(pytorch_cnn_source(MyNetCfg(channels=(16,))))  # doctest: +SKIP
    """
    return standalone_source([prediction, mynet], {"MYNET_CFG": mynet_cfg}, header=_HEADER)


def submission_source(mynet_cfg: MyNetCfg, finetune_cfg: FinetuneCfg, *, plain_torch: bool) -> str:
    """The text of one ``pytorch_cnn.py`` holding ``MyNet``, ``classify`` and ``FinetuneNet`` together.

    Args:
        mynet_cfg: What ``MyNet()`` builds.
        finetune_cfg: What ``FinetuneNet()`` builds.
        plain_torch: Build the backbone in plain torch, so the file needs only torch (EfficientNet-Lite
            backbones only); otherwise ``FinetuneNet()`` needs timm.

    Raises:
        ValueError: with ``plain_torch``, when ``finetune_cfg.backbone`` has no plain-torch version.

    Example:
        >>> text = submission_source(MyNetCfg(), FinetuneCfg(), plain_torch=True)  # doctest: +SKIP
    """
    needs = "Needs only torch." if plain_torch else "Needs torch and timm."
    return standalone_source(
        [prediction, mynet, *finetune_modules(finetune_cfg, plain_torch=plain_torch)],
        {"MYNET_CFG": mynet_cfg, "FINETUNE_CFG": finetune_cfg},
        header=_SUBMISSION_HEADER.format(needs=needs),
    )


def finetune_modules(cfg: FinetuneCfg, *, plain_torch: bool) -> list[ModuleType]:
    """The modules an exported ``FinetuneNet`` is merged from: its backbone factory, then ``finetune``
    (``classify``, which a single-task file needs too, is the caller's to add: a submission has it once).

    Raises:
        ValueError: with ``plain_torch``, when a backbone of ``cfg`` is not a supported EfficientNet-Lite.
    """
    if not plain_torch:
        return [timm_backbone, finetune]
    for name in [cfg.backbone, *(extra for extra, _ in cfg.extras)]:
        if not efficientnet_lite.is_backbone(name):
            raise ValueError(
                f"backbone {name!r} has no plain-torch version; "
                f"supported: {', '.join(efficientnet_lite.LITE_VARIANTS)}"
            )
    return [efficientnet_lite, finetune]


def standalone_source(modules: Sequence[ModuleType], defaults: Mapping[str, Any], *, header: str) -> str:
    """Merge ``modules`` into one file, setting each top-level ``NAME = ...`` of ``defaults`` to its value.

    The modules' ``__all__`` lists become one, after the imports.

    Args:
        modules: Modules importing only the standard library and third-party packages (relative imports
            of each other are dropped: the merged file defines those names itself).
        defaults: Top-level names to rebind, with values whose ``repr`` is valid Python (dataclasses).
        header: The file's docstring.

    Raises:
        ValueError: when a name of ``defaults`` is not assigned at the top level of any module, or two
            modules define the same top-level name (in one file the later would replace the earlier).
    """
    imports: dict[str, None] = {}
    exported: list[str] = []
    bodies = []
    found: set[str] = set()
    owners: dict[str, str] = {}
    for module in modules:
        part = _split(inspect.getsource(module), defaults)
        for name in part.defined:
            if name in owners:
                raise ValueError(
                    f"{name!r} is defined at the top level of both {owners[name]} and {module.__name__}; "
                    "rename one, they cannot share one file"
                )
            owners[name] = module.__name__
        imports.update(dict.fromkeys(part.imports))
        exported += part.exported
        found |= part.rebound
        bodies.append(part.body)
    missing = set(defaults) - found
    if missing:
        raise ValueError(f"no top-level assignment of {sorted(missing)} in {[m.__name__ for m in modules]}")
    exported = list(dict.fromkeys(exported))  # a module may re-export another's name (mynet: classify)
    lines = ["from __future__ import annotations", "", *sorted_imports(imports), "", _all_line(exported)]
    return f"{header}\n" + "\n".join(lines) + "\n\n" + "\n\n\n".join(bodies) + "\n"


@dataclass(frozen=True)
class _Part:
    """One module split for merging."""

    body: str  # the source without docstring, imports and ``__all__``, defaults rebound
    imports: list[str]  # its absolute imports
    rebound: set[str]  # the names of ``defaults`` it assigns
    defined: list[str]  # its top-level names
    exported: list[str]  # its ``__all__``


def _split(source: str, defaults: Mapping[str, Any]) -> _Part:
    tree = ast.parse(source)
    lines = source.splitlines()
    replaced: dict[int, str] = {}
    dropped: set[int] = set()
    imports, rebound, defined, exported = [], set(), [], []
    for position, node in enumerate(tree.body):
        span = range(node.lineno - 1, node.end_lineno or node.lineno)
        name = _target(node)
        if isinstance(node, ast.Import | ast.ImportFrom) or (position == 0 and _is_docstring(node)):
            dropped.update(span)
            if isinstance(node, ast.Import) or (
                isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__"
            ):
                imports.append(ast.unparse(node))
        elif name == "__all__":
            dropped.update(span)
            exported = list(ast.literal_eval(node.value))
        elif name is not None:
            defined.append(name)
            if name in defaults:
                dropped.update(span)
                replaced[node.lineno - 1] = f"{name} = {config_literal(defaults[name])}"
                rebound.add(name)
    out = [replaced.get(i, line) for i, line in enumerate(lines) if i not in dropped or i in replaced]
    body = "\n".join(out)
    while "\n\n\n\n" in body:
        body = body.replace("\n\n\n\n", "\n\n\n")
    return _Part(body.strip("\n"), imports, rebound, defined, exported)


def _target(node: ast.stmt) -> str | None:
    """The name a top-level class, function or single-name assignment defines."""
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        return getattr(node.targets[0], "id", None)
    if isinstance(node, ast.AnnAssign):
        return getattr(node.target, "id", None)
    return None


def _all_line(names: list[str]) -> str:
    """``__all__ = [...]`` on one line, or one name a line when that is too long (like ruff format)."""
    line = f"__all__ = {json.dumps(names)}"
    if len(line) <= 110:
        return line
    return "__all__ = [\n" + "".join(f"    {json.dumps(n)},\n" for n in names) + "]"


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def config_literal(value: Any) -> str:
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
