"""Signals for `edgevoice run`, handled from the first moment to the last.

Before the asyncio loop runs (models loading, seconds to minutes), SIGTERM and SIGHUP would
otherwise kill the process with their default action: no ``finally``, so the control socket
stays behind and a file-mode output is never finished. ``early()`` turns SIGTERM into a clean
stop (the ``finally`` blocks run) and remembers a SIGHUP; ``on_loop()`` then gives the running
agent SIGHUP = reload the config, exactly as ``edgevoice ctl reload``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Optional

log = logging.getLogger(__name__)


class StoppedEarly(SystemExit):
    """SIGTERM arrived before the agent was running: unwind, clean up, exit 0."""


class Signals:
    """One run's signal handling; ``early()`` at start, ``on_loop()`` once the loop runs."""

    def __init__(self) -> None:
        self.hup_pending = False
        self._previous: dict[int, object] = {}

    def early(self) -> None:
        for sig, handler in ((signal.SIGTERM, self._early_term), (signal.SIGHUP, self._early_hup)):
            self._previous[sig] = signal.signal(sig, handler)

    def _early_term(self, signum, frame) -> None:
        log.info("stopped by signal %d before the agent was ready", signum)
        raise StoppedEarly(0)

    def _early_hup(self, signum, frame) -> None:
        self.hup_pending = True  # the config is being read right now; reload once running

    def on_loop(self, loop: asyncio.AbstractEventLoop, manager, control, config,
                config_path: Optional[str]) -> None:
        """SIGHUP reloads the config on ``loop`` (through the control server when there is
        one, so both report the same result)."""
        from edgevoice.control.server import reload_config

        state = {"config": config}

        async def reload() -> None:
            try:
                if control is not None:
                    result = await control.reload()
                else:
                    state["config"], result = await reload_config(manager, state["config"],
                                                                  config_path)
            except Exception as exc:  # a broken file: keep running on the old config
                log.warning("SIGHUP: the config was not reloaded: %s", exc)
                return
            log.warning("SIGHUP: config reloaded from %s; applied: %s; needs a restart: %s",
                        result["source"] or "defaults", ", ".join(result["applied"]) or "none",
                        ", ".join(result["needs_restart"]) or "none")

        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
        if self.hup_pending:
            self.hup_pending = False
            loop.create_task(reload())

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
