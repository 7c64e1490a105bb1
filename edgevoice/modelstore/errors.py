"""Model-store errors: one sentence each, printed by the CLI without a traceback."""

from __future__ import annotations

from edgevoice.errors import ModelError, UserError


class CatalogError(UserError):
    """The catalog file is unreadable or invalid: the message names the source and the entry."""


class DownloadError(ModelError):
    """A download or install failed (network, HTTP status, checksum, disk space, bad archive).

    Exit code 1, not 2: the command was right, the operation failed; nothing was installed.
    """

    exit_code = 1
