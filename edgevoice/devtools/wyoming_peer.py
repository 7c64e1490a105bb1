"""Test and benchmark side of the Wyoming service: start `edgevoice wyoming` in a process and
drive it with the `wyoming` package's own async client, as Home Assistant's integration does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize

READY = re.compile(r"Wyoming on tcp://([0-9.]+):(\d+)")


@dataclass
class ServerProcess:
    """A running `edgevoice wyoming`; ``log`` collects its stderr lines."""

    process: subprocess.Popen
    host: str
    port: int
    log: list[str] = field(default_factory=list)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/task"))

    def wait_log(self, *parts: str, timeout_s: float = 10.0) -> bool:
        """Wait for a stderr line holding every one of ``parts`` (stderr is read by a thread)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(all(p in line for p in parts) for line in list(self.log)):
                return True
            time.sleep(0.05)
        return False

    def sockets(self) -> int:
        """Open sockets (the listener, asyncio's self-pipe and one per client)."""
        folder = f"/proc/{self.process.pid}/fd"
        count = 0
        for name in os.listdir(folder):
            with contextlib.suppress(OSError):
                count += os.readlink(f"{folder}/{name}").startswith("socket:")
        return count

    def wait_idle(self, idle_sockets: int, timeout_s: float = 30.0) -> bool:
        """Wait until the server holds no client connection (``idle_sockets`` left)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.sockets() <= idle_sockets:
                return True
            time.sleep(0.1)
        return False


@contextlib.contextmanager
def wyoming_server(args: Sequence[str], *, env: Optional[dict] = None, prefix: Sequence[str] = (),
                   start_timeout_s: float = 90.0) -> Iterator[ServerProcess]:
    """Run ``[prefix...] python -m edgevoice wyoming ARGS`` until it says where it listens."""
    command = [*prefix, sys.executable, "-m", "edgevoice", "wyoming", *args]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    lines: list[str] = []
    found = threading.Event()
    where: list[tuple[str, int]] = []

    def drain() -> None:
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            match = READY.search(line)
            if match and not found.is_set():
                where.append((match.group(1), int(match.group(2))))
                found.set()
        found.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        if not found.wait(start_timeout_s) or not where:
            raise RuntimeError("edgevoice wyoming did not start: " + "\n".join(lines[-20:]))
        yield ServerProcess(process, where[0][0], where[0][1], lines)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        reader.join(timeout=5)


def pcm_events(pcm: bytes, rate: int, width: int, channels: int, chunk_ms: float = 64
               ) -> list[Event]:
    step = max(1, int(rate * chunk_ms / 1000)) * width * channels
    return [AudioChunk(rate, width, channels, pcm[i:i + step]).event()
            for i in range(0, len(pcm), step)]


@dataclass
class Transcribed:
    text: str
    events: list[Event]  # everything the server sent, in order
    first_transcript_ms: float  # audio-stop sent -> transcript received


async def transcribe(host: str, port: int, pcm: bytes, rate: int = 16000, width: int = 2,
                     channels: int = 1, *, realtime: bool = False, chunk_ms: float = 64,
                     timeout_s: float = 60.0) -> Transcribed:
    """Send audio as Home Assistant's STT does; ``realtime`` paces it like a microphone."""
    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate, width, channels).event())
        started = time.monotonic()
        for i, event in enumerate(pcm_events(pcm, rate, width, channels, chunk_ms)):
            if realtime:
                await asyncio.sleep(max(0.0, started + i * chunk_ms / 1000 - time.monotonic()))
            await client.write_event(event)
        await client.write_event(AudioStop().event())
        stopped = time.monotonic()
        events, text, first = [], None, None
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout_s)
            if event is None:
                break
            events.append(event)
            if Transcript.is_type(event.type):
                text, first = Transcript.from_event(event).text, time.monotonic()
            if event.type in ("transcript-stop", "error") or (
                    text is not None and not any(e.type == "transcript-start" for e in events)):
                break
        if text is None:
            raise RuntimeError(f"no transcript; got {[e.type for e in events]}")
        return Transcribed(text, events, (first - stopped) * 1000)


@dataclass
class Spoken:
    rate: int
    width: int
    channels: int
    pcm: bytes
    events: list[Event]
    first_audio_ms: float  # request sent -> first audio-chunk


async def synthesize(host: str, port: int, text: str, timeout_s: float = 60.0) -> Spoken:
    async with AsyncTcpClient(host, port) as client:
        sent = time.monotonic()
        await client.write_event(Synthesize(text).event())
        events, pcm, first, fmt = [], bytearray(), None, (0, 0, 0)
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout_s)
            if event is None:
                raise RuntimeError(f"connection closed after {[e.type for e in events]}")
            events.append(event)
            if AudioStart.is_type(event.type):
                start = AudioStart.from_event(event)
                fmt = (start.rate, start.width, start.channels)
            elif AudioChunk.is_type(event.type):
                first = first or time.monotonic()
                pcm += event.payload or b""
            elif event.type in ("audio-stop", "error"):
                break
        return Spoken(*fmt, bytes(pcm), events,
                      ((first or time.monotonic()) - sent) * 1000)


async def handle(host: str, port: int, text: str, conversation_id: Optional[str] = None,
                 timeout_s: float = 60.0) -> tuple[Event, float]:
    """A conversation turn as Home Assistant's Wyoming conversation agent sends it."""
    context = {"conversation_id": conversation_id} if conversation_id else None
    async with AsyncTcpClient(host, port) as client:
        sent = time.monotonic()
        await client.write_event(Transcript(text, context=context, language="en").event())
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout_s)
            if event is None:
                raise RuntimeError("connection closed before `handled`")
            if event.type in ("handled", "not-handled", "error"):
                return event, (time.monotonic() - sent) * 1000


async def describe(host: str, port: int, timeout_s: float = 30.0) -> Info:
    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Describe().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout_s)
            if event is None:
                raise RuntimeError("connection closed before `info`")
            if Info.is_type(event.type):
                return Info.from_event(event)


def read_pcm16(path: Path, rate: int = 16000) -> bytes:
    """A clip as 16-bit mono PCM at ``rate`` (our reader: any file format)."""
    from edgevoice.audio.wavfile import read_audio

    return read_audio(path, rate).data
