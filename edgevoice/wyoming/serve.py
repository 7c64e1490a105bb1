"""Assemble and run the Wyoming services from config: alone (`edgevoice wyoming`) or beside the
agent (`edgevoice run` with `wyoming.enabled`), sharing its router, voice and LLM thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from edgevoice.config import Config, Paths
from edgevoice.llm.router import Router
from edgevoice.tts.protocol import Synthesizer
from edgevoice.wyoming.asr import RecognizerPool
from edgevoice.wyoming.discovery import Advertisement, advertise
from edgevoice.wyoming.handle import Conversations
from edgevoice.wyoming.info import build_info, recognizer_languages
from edgevoice.wyoming.server import Services, WyomingServer

log = logging.getLogger(__name__)


def _handle_models(router: Router) -> list[str]:
    out = []
    for name, target in router.targets.items():
        model = target.describe().model or name
        out.append(Path(model).name if name == "local" else f"{name}: {model}")
    return out


async def start_services(cfg: Config, paths: Paths, router: Router, synth: Synthesizer,
                         uri: Optional[str] = None, *, llm_thread: Optional[Executor] = None,
                         ) -> tuple[WyomingServer, Optional[Advertisement]]:
    """Build the services, listen on ``uri`` (default `wyoming.uri`) and announce them when
    `wyoming.advertise`. The first recognizer loads here, so a bad ASR config fails at start."""
    from edgevoice.asr.select import make_recognizer

    pool = RecognizerPool(lambda: make_recognizer(cfg.asr, paths, 16000))
    first = await pool.acquire()
    await pool.release(first)
    recognizer = first.recognizer
    folder = getattr(recognizer, "model_folder", None)
    asr_model = Path(folder).name if folder else "pocketsphinx-en-us (bundled)"
    info = build_info(recognizer.name, asr_model,
                      recognizer_languages(recognizer.name, str(folder) if folder else None),
                      getattr(synth, "voice_id", None) or "default", _handle_models(router),
                      stream_transcripts=cfg.wyoming.stream_transcripts)
    own_thread = llm_thread is None
    services = Services(cfg, pool, synth, Conversations(router, cfg.llm,
                                                        cfg.wyoming.conversations), info,
                        llm_thread or ThreadPoolExecutor(1, thread_name_prefix="edgevoice-llm"))
    server = WyomingServer(services)
    try:
        host, port = await server.start(uri or cfg.wyoming.uri)
        ad = await advertise(cfg.wyoming.name, host, port) if cfg.wyoming.advertise else None
    except BaseException:
        await server.aclose()
        raise
    if own_thread:
        server.owned_threads.append(services.llm_thread)
    return server, ad


async def stop_services(server: WyomingServer, ad: Optional[Advertisement]) -> None:
    if ad is not None:
        await ad.aclose()
    await server.aclose()


async def serve(cfg: Config, paths: Paths, router: Router, synth: Synthesizer, uri: str,
                stop: asyncio.Event, ready=None) -> None:
    """`edgevoice wyoming`: serve until ``stop`` is set."""
    server, ad = await start_services(cfg, paths, router, synth, uri)
    try:
        if ready is not None:
            ready(server)
        await stop.wait()
    finally:
        await stop_services(server, ad)


@contextlib.asynccontextmanager
async def beside_agent(cfg: Config, paths: Paths, router: Router, synth: Synthesizer, manager):
    """`edgevoice run` with `wyoming.enabled`: the services share the agent's router, voice and
    LLM thread (one llama.cpp model, used by one thread at a time)."""
    server, ad = await start_services(cfg, paths, router, synth, llm_thread=manager.llm_worker)
    try:
        yield server
    finally:
        await stop_services(server, ad)
