"""Search spaces: what each task searches, with user overrides from TOML files and ``--set``."""

from ._space import Choice
from ._space import FloatRange
from ._space import IntRange
from ._space import Param
from ._space import Space
from ._space import SpaceError
from ._space import parse_assignment

__all__ = ["Choice", "FloatRange", "IntRange", "Param", "Space", "SpaceError", "parse_assignment"]
