"""User-facing errors.

Every failure a user can cause (bad input, bad options, a foreign checkpoint) raises a subclass of
:class:`MedidiffError`. The CLI turns them into one line on stderr and exit code 2.
"""

from __future__ import annotations


class MedidiffError(Exception):
    """Base class of the errors medidiff reports to users as one line."""


class InputError(MedidiffError):
    """The input path is missing, unreadable, corrupt, ambiguous or of the wrong dimensionality."""


class OutputError(MedidiffError):
    """The output cannot be written (exists, equals the input, unsupported format)."""


class ModelError(MedidiffError):
    """A checkpoint is missing, foreign, corrupt or incompatible."""


class ConfigError(MedidiffError):
    """An option or configuration value is invalid."""


class ConsistencyError(MedidiffError):
    """Under ``--strict``: the restoration failed its consistency check (it may be worse than the input)."""
