"""Errors a user can fix. The CLI prints their message as one sentence and exits 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem caused by input, configuration or the environment, with the fix in its message."""

    exit_code = 2


class ConfigError(UserError):
    """Invalid configuration: the message names the key path and, when known, the file and line."""

    line: int | None = None
    """The line of the file the problem is on, when known (set by the config loader)."""


class ModelError(UserError):
    """A model is missing or unusable: the message names the path and how to get one."""


class AudioDeviceError(UserError):
    """An audio device or the PortAudio library is missing, busy or unusable."""


class CommandError(UserError):
    """A control command that can't be done now (push-to-talk while it is off, a bad policy...)."""
