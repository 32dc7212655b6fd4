"""The exception a user can act on: bad input, a missing or corrupt file, a wrong setting.

:class:`UserError` subclasses ``ValueError`` (so ``except ValueError`` still catches it), but
only it, and its subclasses such as :class:`pyro_ebm.config.ConfigError`, are what the
``pyro-ebm`` command shows as a one-line error with exit status 2; any other exception is an
unexpected failure (status 1) whose traceback ``--debug`` shows.

Examples
--------
>>> from pyro_ebm.errors import UserError
>>> issubclass(UserError, ValueError)
True
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A problem the user can fix (bad input, missing or corrupt files); shown as one line."""
