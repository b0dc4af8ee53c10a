"""The evaluator's CPU as a constraint of the finetune search.

Before a trial trains, its network's CPU cost is measured in ``validate``'s unit (ms of CPU per 100 of the
evaluator's 96 px images at one thread, :func:`objectives.training.cpu_cost.cpu_ms_per_100`); a
configuration over the limit is pruned with the reason, before any feature or epoch is computed. The default
limit is the setting ``max_cpu_x_baseline`` (4) times the baseline configuration's cost
(``spaces.finetune.BASELINE``, the lite0 224 px probe) measured in the same process, so it means the same on
a laptop and on a server; the setting ``max_cpu_ms`` sets an absolute limit instead. Figures:
docs/measurements.md.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from models.finetune import FinetuneCfg, FinetuneNet
from objectives.finetune.photos import IMAGE_SIZE
from objectives.training.cpu_cost import cpu_ms_per_100
from spaces.finetune import BASELINE, SPACE

__all__ = ["cpu_cost", "cpu_limit", "over_cpu_limit"]

_MEASURED: dict[tuple[Any, ...], float] = {}  # per process: one measurement per backbone and resolution


def cpu_cost(cfg: FinetuneCfg, model: nn.Module | None = None) -> float:
    """CPU ms per 100 evaluator images at 1 thread of the network ``cfg`` describes (``model`` when it is
    built already: its weights do not change the cost), measured once per process for each set of backbones
    and resolutions: the head (at most 1280 x 512 multiply-adds an image) is noise beside the backbone, and
    keying by it would re-time the backbone for every MLP width a probe search draws."""
    key = (cfg.backbone, cfg.resolution, cfg.extras)
    if key not in _MEASURED:
        net = model if model is not None else FinetuneNet(cfg)
        _MEASURED[key] = cpu_ms_per_100(net, (3, IMAGE_SIZE, IMAGE_SIZE))
    return _MEASURED[key]


def cpu_limit(settings: dict[str, Any]) -> tuple[float, str]:
    """The limit in force (ms per 100 images at 1 thread) and where it comes from, in words."""
    if settings.get("max_cpu_ms") is not None:
        return float(settings["max_cpu_ms"]), "max_cpu_ms"
    factor = float(settings.get("max_cpu_x_baseline") or SPACE.params["max_cpu_x_baseline"].default)
    baseline = FinetuneCfg(
        backbone=BASELINE["backbone"], resolution=BASELINE["resolution"], head=BASELINE["head"]
    )
    base = cpu_cost(baseline)
    return factor * base, f"{factor:g} x the baseline's {base:.0f} ms, max_cpu_x_baseline"


def over_cpu_limit(
    cfg: FinetuneCfg, model: nn.Module, settings: dict[str, Any]
) -> tuple[float, float, str | None]:
    """``(cost, limit, reason)``: the configuration's CPU cost, the limit, and why it is pruned (``None``:
    within the limit)."""
    cost = cpu_cost(cfg, model)
    limit, source = cpu_limit(settings)
    if cost <= limit:
        return cost, limit, None
    reason = (
        f"CPU {cost:.0f} ms per 100 images at 1 thread exceeds the limit of {limit:.0f} ms ({source}): "
        "the evaluator's CPU time, measured before training"
    )
    return cost, limit, reason
