"""The Wyoming server: one TCP listener, one ``Connection`` per client, shared services.

Events a connection understands: describe, ping, transcribe + audio-start/-chunk/-stop,
synthesize (and synthesize-start/-chunk/-stop), transcript (a conversation turn). Unknown events
are dropped, as the protocol asks; a malformed one gets an `error` event and the connection goes
on; only a frame that cannot be read past ends it. Each client has its own recognizer and
conversation, every wait is bounded, and a client that leaves mid-request frees what it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from edgevoice.config import Config
from edgevoice.errors import UserError
from edgevoice.tts.clauses import ClauseSplitter
from edgevoice.tts.protocol import Synthesizer
from edgevoice.wyoming.asr import (
    AudioFormatError,
    PooledRecognizer,
    RecognizerPool,
    Transcription,
    check_format,
)
from edgevoice.wyoming.framing import BadEvent, read_event
from edgevoice.wyoming.handle import ANONYMOUS, Conversations
from edgevoice.wyoming.tts import AudioEvents, clauses_of, render, splitter

log = logging.getLogger(__name__)


def parse_uri(uri: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port), or a ``UserError`` saying what is wrong."""
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise UserError(f"Wyoming URI {uri!r} is not tcp://HOST:PORT (e.g. tcp://0.0.0.0:10700); "
                        "fix --uri or `wyoming.uri`")
    return parts.hostname, port


@dataclass
class Services:
    """What every connection shares: built once by the command that serves."""

    cfg: Config
    pool: RecognizerPool
    synth: Synthesizer
    conversations: Conversations
    info: Info
    llm_thread: Executor  # the one thread that runs the language model
    tts_thread: Executor = field(default_factory=lambda: ThreadPoolExecutor(
        1, thread_name_prefix="edgevoice-wyoming-tts"))


class WyomingServer:
    """Listens on ``uri`` and serves ``services`` until ``aclose``."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.wcfg = services.cfg.wyoming
        self._server: Optional[asyncio.AbstractServer] = None
        self._connections: set[asyncio.Task] = set()
        self.address: tuple[str, int] = ("", 0)
        self.served = 0  # connections accepted (tests and logs)
        self.owned_threads: list[Executor] = []  # shut down with the server

    async def start(self, uri: str) -> tuple[str, int]:
        host, port = parse_uri(uri)
        try:
            self._server = await asyncio.start_server(self._accept, host, port)
        except OSError as exc:
            raise UserError(f"cannot listen on {uri} for Wyoming: {exc.strerror}; pick another "
                            "port with --uri or `wyoming.uri`") from None
        self.address = self._server.sockets[0].getsockname()[:2]
        log.info("Wyoming on tcp://%s:%d", *self.address)
        return self.address

    @property
    def active(self) -> int:
        return len(self._connections)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.served += 1
        if len(self._connections) >= self.wcfg.max_clients:
            with contextlib.suppress(OSError):
                await async_write_event(Error(
                    f"edgevoice serves at most {self.wcfg.max_clients} clients at once "
                    "(wyoming.max_clients); try again", "busy").event(), writer)
            await _close(writer)
            return
        self._connections.add(task)
        try:
            await Connection(self.services, reader, writer).run()
        except asyncio.CancelledError:
            pass  # the server is closing: asyncio's stream callback must not see a cancellation
        finally:
            self._connections.discard(task)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()
        self.services.pool.close()
        self.services.tts_thread.shutdown(wait=True)
        for thread in self.owned_threads:
            thread.shutdown(wait=True)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


class Connection:
    """One client: reads events in order and answers each."""

    def __init__(self, services: Services, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.s = services
        self.wcfg = services.cfg.wyoming
        self.reader, self.writer = reader, writer
        self.peer = writer.get_extra_info("peername")
        self._rec: Optional[PooledRecognizer] = None
        self._transcription: Optional[Transcription] = None
        self._language: Optional[str] = None
        self._streamed = False  # transcript-start sent for this transcription
        self._tts_stream: Optional[ClauseSplitter] = None
        self._tts_chars = 0

    async def run(self) -> None:
        try:
            while True:
                try:
                    event = await asyncio.wait_for(read_event(self.reader),
                                                   self.wcfg.idle_timeout_s)
                except asyncio.TimeoutError:
                    log.info("Wyoming client %s idle for %g s: closed", self.peer,
                             self.wcfg.idle_timeout_s)
                    break
                except BadEvent as exc:
                    await self.error(f"not a Wyoming event: {exc}", "bad-event")
                    if exc.fatal:
                        break
                    continue
                if event is None:
                    break
                try:
                    await self.dispatch(event)
                except _BadRequest as exc:
                    await self.error(str(exc), exc.code)
                except (ConnectionError, asyncio.CancelledError):
                    raise
                except Exception as exc:  # one request failed; the service goes on
                    log.warning("Wyoming %s request failed: %s", event.type, exc)
                    log.debug("the failure", exc_info=True)
                    await self.error(f"{event.type} failed: {exc}", "failed")
        except (ConnectionError, OSError) as exc:
            log.debug("Wyoming client %s went away: %s", self.peer, exc)
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        self._transcription = None
        if self._rec is not None:
            rec, self._rec = self._rec, None
            with contextlib.suppress(Exception):
                await asyncio.shield(self.s.pool.release(rec))
        await _close(self.writer)

    async def send(self, event: Event) -> None:
        await async_write_event(event, self.writer)

    async def error(self, text: str, code: str) -> None:
        log.info("Wyoming client %s: %s", self.peer, text)
        with contextlib.suppress(ConnectionError, OSError):
            await self.send(Error(text, code).event())

    # -- events --

    async def dispatch(self, event: Event) -> None:
        kind = event.type
        if Describe.is_type(kind):
            await self.send(self.s.info.event())
        elif Ping.is_type(kind):
            await self.send(Pong(text=event.data.get("text")).event())
        elif Transcribe.is_type(kind):
            language = event.data.get("language")
            self._language = language if isinstance(language, str) else None
        elif AudioStart.is_type(kind):
            await self._audio_start(_format(event))
        elif AudioChunk.is_type(kind):
            await self._audio_chunk(event)
        elif AudioStop.is_type(kind):
            await self._audio_stop()
        elif Synthesize.is_type(kind):
            if self._tts_stream is None:  # else the copy sent for older servers: ignored
                await self._synthesize(_text(event, self.wcfg.max_text_chars))
        elif SynthesizeStart.is_type(kind):
            self._tts_stream, self._tts_chars = splitter(self._first_words), 0
        elif SynthesizeChunk.is_type(kind):
            await self._synthesize_chunk(event)
        elif SynthesizeStop.is_type(kind):
            await self._synthesize_stop()
        elif Transcript.is_type(kind):
            await self._handle(event)
        else:
            log.debug("Wyoming client %s: ignored %r event", self.peer, kind)

    @property
    def _first_words(self) -> int:
        return self.s.cfg.tts.first_clause_max_words

    # asr

    async def _audio_start(self, fmt: tuple[int, int, int]) -> None:
        if self._rec is None:
            self._rec = await self.s.pool.acquire()
        elif self._transcription is not None:  # a new stream abandons the old one
            await asyncio.get_running_loop().run_in_executor(self._rec.thread,
                                                             self._rec.recognizer.reset)
        self._transcription = Transcription(self.s.cfg, self._rec.recognizer,
                                            self.wcfg.max_audio_s)
        self._streamed = False

    async def _audio_chunk(self, event: Event) -> None:
        fmt = _format(event)
        if self._transcription is None:  # audio without audio-start: start on its format
            await self._audio_start(fmt)
        transcription = self._transcription
        fixed = await asyncio.get_running_loop().run_in_executor(
            self._rec.thread, transcription.feed, event.payload or b"", fmt)
        if fixed and self.wcfg.stream_transcripts:
            await self._stream_start()
            for text in fixed:
                await self.send(TranscriptChunk(text).event())

    async def _stream_start(self) -> None:
        if not self._streamed:
            self._streamed = True
            await self.send(TranscriptStart(language=self._language).event())

    async def _audio_stop(self) -> None:
        transcription, self._transcription = self._transcription, None
        if transcription is None:
            raise _BadRequest("audio-stop without audio: send audio-start and audio-chunk "
                              "first", "no-audio")
        text, fixed = await asyncio.get_running_loop().run_in_executor(self._rec.thread,
                                                                       transcription.finish)
        log.info("Wyoming transcript (%.1f s of audio%s): %r", transcription.heard_s,
                 ", cut at wyoming.max_audio_s" if transcription.truncated else "", text)
        if self.wcfg.stream_transcripts:
            await self._stream_start()
            for piece in fixed:
                await self.send(TranscriptChunk(piece).event())
        await self.send(Transcript(text, language=self._language).event())
        if self.wcfg.stream_transcripts:
            await self.send(TranscriptStop().event())
        self._streamed = False

    # tts

    async def _synthesize(self, text: str) -> None:
        audio = AudioEvents(self.s.synth)
        await self.send(audio.start())
        async for pcm in render(self.s.synth, clauses_of(text, self._first_words),
                                self.s.tts_thread):
            for chunk in audio.chunks(pcm):
                await self.send(chunk)
        await self.send(audio.stop())

    async def _speak_clauses(self, clauses: list[str]) -> None:
        """Streaming: each clause its own audio-start .. audio-stop, sent when rendered."""
        async for pcm in render(self.s.synth, clauses, self.s.tts_thread):
            audio = AudioEvents(self.s.synth)
            await self.send(audio.start())
            for chunk in audio.chunks(pcm):
                await self.send(chunk)
            await self.send(audio.stop())

    async def _synthesize_chunk(self, event: Event) -> None:
        if self._tts_stream is None:
            raise _BadRequest("synthesize-chunk without synthesize-start", "no-stream")
        text = _text(event, self.wcfg.max_text_chars)
        self._tts_chars += len(text)
        if self._tts_chars > self.wcfg.max_text_chars:
            self._tts_stream = None
            raise _BadRequest(f"streamed text is over {self.wcfg.max_text_chars} characters "
                              "(wyoming.max_text_chars): the rest is not spoken", "too-long")
        await self._speak_clauses(self._tts_stream.push(text))

    async def _synthesize_stop(self) -> None:
        stream, self._tts_stream = self._tts_stream, None
        if stream is not None:
            await self._speak_clauses(stream.flush())
        await self.send(SynthesizeStopped().event())

    # handle

    async def _handle(self, event: Event) -> None:
        text = _text(event, self.wcfg.max_text_chars)
        context = event.data.get("context")
        context = context if isinstance(context, dict) else {}
        conversation = context.get("conversation_id")
        cid = str(conversation) if conversation is not None else ANONYMOUS
        answer = await self.s.conversations.ask(cid, text, self.s.llm_thread)
        log.info("Wyoming turn %r -> %r (%s, %.0f ms)", text, answer.text, answer.target,
                 answer.total_ms)
        reply_context = {"conversation_id": cid} if cid else None
        await self.send(Handled(answer.text, context=reply_context).event())


class _BadRequest(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _text(event: Event, limit: int) -> str:
    text = event.data.get("text")
    if not isinstance(text, str):
        raise _BadRequest(f"{event.type} needs a string `text`", "bad-event")
    if len(text) > limit:
        raise _BadRequest(f"{event.type} text is {len(text)} characters, over the limit of "
                          f"{limit} (wyoming.max_text_chars)", "too-long")
    return text


def _format(event: Event) -> tuple[int, int, int]:
    try:
        return check_format(event.data.get("rate"), event.data.get("width"),
                            event.data.get("channels"))
    except AudioFormatError as exc:
        raise _BadRequest(f"{event.type}: {exc}", "bad-audio-format") from None
