"""Search spaces: what a task searches, its allowed values, and user overrides.

A space is a table of named parameters. Each parameter has a *default spec* (what is searched
when the user says nothing) and a *domain* (what the user may ask for). Users override specs from
a TOML file (``--space FILE``) or from the command line (``--set key=value``), in one format:

    lr = 0.05                                  # fixed value: not searched
    activation = ["relu", "tanh"]              # a choice between these values
    lr = {low = 1e-3, high = 0.3, log = true}  # a range (float or int parameters)
    width = {low = 16, high = 256, step = 16}

``Space.suggest`` is the only place where ``trial.suggest_*`` is called.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

__all__ = ["Choice", "FloatRange", "IntRange", "Param", "Space", "SpaceError", "parse_assignment"]


class SpaceError(ValueError):
    """A space file or ``--set`` override names an unknown key or a value outside its domain."""


@dataclass(frozen=True)
class FloatRange:
    """Search a float uniformly (or log-uniformly) in ``[low, high]``."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """Search an integer in ``[low, high]`` with ``step`` (or log-uniformly)."""

    low: int
    high: int
    log: bool = False
    step: int = 1


@dataclass(frozen=True)
class Choice:
    """Search a categorical choice among ``choices``."""

    choices: tuple[Any, ...]


Spec = FloatRange | IntRange | Choice | Any


@dataclass(frozen=True)
class Param:
    """One named parameter of a space.

    Args:
        name: The key users write in a space file.
        kind: ``"float"``, ``"int"``, ``"choice"`` (searched) or ``"setting"`` (always a fixed value,
            taken verbatim, e.g. the pair of classes; a setting cannot change within a study).
        default: The spec searched when the user gives no override.
        bounds: Inclusive ``(low, high)`` a numeric value must lie in.
        allowed: The values a choice may take.
        check: Returns what is wrong with a value (e.g. ``"must be two distinct digits"``) or ``None``
            when it is fine (a setting's value; each value of a searched parameter).
        doc: One line shown in help.
    """

    name: str
    kind: str
    default: Spec
    bounds: tuple[float, float] | None = None
    allowed: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


class Space:
    """An ordered table of parameters with their current specs.

    Args:
        task: The task name, used in messages.
        params: The parameters and their defaults.
        specs: Current specs by name; defaults where absent.
    """

    def __init__(self, task: str, params: Iterable[Param], specs: Mapping[str, Spec] | None = None) -> None:
        self.task = task
        self.params = {p.name: p for p in params}
        self.specs: dict[str, Spec] = {name: p.default for name, p in self.params.items()}
        for name, spec in (specs or {}).items():
            self.specs[name] = spec

    def __getitem__(self, name: str) -> Spec:
        return self.specs[name]

    def with_overrides(self, overrides: Mapping[str, Any], *, origin: str = "--set") -> Space:
        """Return a copy with ``overrides`` (raw TOML values) validated and applied.

        Raises:
            SpaceError: naming the unknown key or the bad value and the rule it breaks.
        """
        specs = dict(self.specs)
        for name, raw in overrides.items():
            if name not in self.params:
                raise SpaceError(
                    f"{origin}: unknown {self.task} parameter {name!r}; valid keys: {', '.join(self.params)}"
                )
            specs[name] = _to_spec(self.params[name], raw, origin)
        return Space(self.task, self.params.values(), specs)

    def with_file(self, path: str | Path) -> Space:
        """Return a copy with the overrides of a TOML space file applied."""
        path = Path(path)
        try:
            table = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SpaceError(f"space file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpaceError(f"space file {str(path)!r} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SpaceError(f"space file {str(path)!r} is not valid TOML: {exc}") from None
        return self.with_overrides(table, origin=f"space file {str(path)!r}")

    def suggest(self, trial: optuna.Trial, key: str, *, name: str | None = None) -> Any:
        """Draw the value of ``key`` for ``trial`` (stored under ``name``, default ``key``)."""
        spec = self.specs[key]
        name = name or key
        if self.params[key].kind == "setting":
            return spec
        if isinstance(spec, FloatRange):
            return trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        if isinstance(spec, IntRange):
            return trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
        if isinstance(spec, Choice):
            return trial.suggest_categorical(name, list(spec.choices))
        return spec

    def suggest_all(self, trial: optuna.Trial, *keys: str) -> dict[str, Any]:
        """Draw ``keys`` in order (see :meth:`suggest`): keyword arguments of a config of the same names."""
        return {key: self.suggest(trial, key) for key in keys}

    def searched(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The part of ``params`` this space draws and can reach: keys searched under their current spec
        whose value lies in it (what ``optuna.Study.enqueue_trial`` may fix; the rest is drawn as usual)."""
        return {k: v for k, v in params.items() if k in self.specs and _reaches(self.specs[k], v)}

    def largest(self, key: str) -> Any:
        """The largest value ``key`` can take under its current spec (e.g. the epoch budget of pruners)."""
        spec = self.specs[key]
        if isinstance(spec, FloatRange | IntRange):
            return spec.high
        if isinstance(spec, Choice):
            return max(spec.choices)
        return spec

    def settings(self) -> dict[str, Any]:
        """The values of the ``setting`` parameters (fixed for the whole study)."""
        return {n: self.specs[n] for n, p in self.params.items() if p.kind == "setting"}

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of every current spec (stored in the study's metadata)."""
        return {name: _describe(spec) for name, spec in self.specs.items()}


def _reaches(spec: Spec, value: Any) -> bool:
    if isinstance(spec, Choice):
        return value in spec.choices
    if not isinstance(spec, FloatRange | IntRange):
        return False  # a constant: nothing is drawn
    if isinstance(value, bool) or not isinstance(value, int | float) or not spec.low <= value <= spec.high:
        return False
    if isinstance(spec, IntRange):
        return isinstance(value, int) and (value - spec.low) % spec.step == 0
    return True


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse one ``--set key=value``; the value is read as TOML, or as a bare string if it is not TOML.

    Raises:
        SpaceError: when ``text`` has no ``=`` or an empty key.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpaceError(f"--set expects key=value, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key, parsed


def _to_spec(param: Param, raw: Any, origin: str) -> Spec:
    where = f"{origin}: {param.name}"
    if param.kind == "setting":
        problem = param.check(raw) if param.check else None
        if problem:
            raise SpaceError(f"{where} {problem}, got {raw!r}")
        return raw
    if isinstance(raw, dict):
        if param.kind not in ("float", "int"):
            raise SpaceError(f"{where} is a choice; give a value or a list of values, not a range {raw}")
        return _to_range(param, raw, where)
    if isinstance(raw, list):
        if not raw:
            raise SpaceError(f"{where}: an empty list of choices")
        for value in raw:
            _check_value(param, value, where)
        return Choice(tuple(raw))
    _check_value(param, raw, where)
    return raw


def _to_range(param: Param, raw: dict[str, Any], where: str) -> FloatRange | IntRange:
    unknown = set(raw) - {"low", "high", "log", "step"}
    if unknown or "low" not in raw or "high" not in raw:
        raise SpaceError(f"{where}: a range needs keys low and high (optional log, step), got {raw}")
    low, high = raw["low"], raw["high"]
    log, step = raw.get("log", False), raw.get("step", 1)
    _check_value(param, low, where)
    _check_value(param, high, where)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: log must be true or false, got {log!r}")
    if low > high:
        raise SpaceError(f"{where}: low must not exceed high, got low={low}, high={high}")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range needs low > 0, got low={low}")
    if param.kind == "int":
        if not isinstance(step, int) or step < 1:
            raise SpaceError(f"{where}: step must be a positive integer, got {step!r}")
        if log and step != 1:
            raise SpaceError(f"{where}: a log range cannot have a step, got step={step}")
        return IntRange(int(low), int(high), log=log, step=step)
    if "step" in raw:
        raise SpaceError(f"{where}: step applies to integer parameters only")
    return FloatRange(float(low), float(high), log=log)


def _check_value(param: Param, value: Any, where: str) -> None:
    if param.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpaceError(f"{where} must be an integer, got {value!r}")
    if param.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SpaceError(f"{where} must be a finite number, got {value!r}")
    if param.kind in ("int", "float") and param.bounds is not None:
        low, high = param.bounds
        if not low <= value <= high:
            raise SpaceError(f"{where} must lie in [{low}, {high}], got {value!r}")
    if param.kind == "choice" and param.allowed is not None and value not in param.allowed:
        allowed = ", ".join(repr(a) for a in param.allowed)
        raise SpaceError(f"{where} must be one of {allowed}; got {value!r}")
    problem = param.check(value) if param.check is not None else None
    if problem:
        raise SpaceError(f"{where} {problem}, got {value!r}")


def _describe(spec: Spec) -> Any:
    if isinstance(spec, FloatRange | IntRange):
        return {k: v for k, v in spec.__dict__.items() if not (k == "step" and v == 1) and v is not False}
    if isinstance(spec, Choice):
        return list(spec.choices)
    return spec
