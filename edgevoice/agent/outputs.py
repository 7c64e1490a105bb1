"""Where the agent's voice goes: a device (through ``devices.Speaker``) or a WAV file on the input's
timeline. Both keep a schedule, so the manager knows when each clause starts and ends playing —
which is what barge-in needs to tell what was actually spoken."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from edgevoice.audio.format import AudioChunk
from edgevoice.audio.wav_stream import StreamingWavWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scheduled:
    start: float  # time.monotonic() at which the chunk's first sample plays
    end: float


class AudioOutput(Protocol):
    def play(self, chunk: AudioChunk) -> Scheduled:
        """Queue ``chunk`` after what is already queued; never blocks on playback."""
        ...

    def clear(self) -> float:
        """Drop everything not yet played (barge-in); return the time it stopped."""
        ...

    def idle_at(self) -> float:
        """When everything queued so far will have played."""
        ...

    def close(self) -> None: ...


class FileOutput:
    """Writes the agent's speech into a WAV placed on the input stream's timeline.

    ``origin`` is the monotonic time of the input's sample 0; a reply that starts playing 1.2 s
    after that is written 1.2 s into the file, so first-audio latency can be read off the file.
    Audio is on disk as soon as it has been played (a barge-in can no longer cut it), flushed
    twice a second, so a crash or kill -9 loses at most the last second of the file.
    """

    FLUSH_S = 0.5

    def __init__(self, path: str | Path, rate: int = 22050) -> None:
        self.path = Path(path)
        self.rate = rate
        self.origin: Optional[float] = None
        self.duration_ms = 0.0
        self._segments: list[tuple[float, AudioChunk]] = []  # (start, chunk)
        self._end = 0.0
        self._lock = threading.Lock()
        self._writer = StreamingWavWriter(self.path, rate)
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="wav-writer",
                                         daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.FLUSH_S):
            self._write_played(time.monotonic())

    def _write_played(self, now: Optional[float]) -> None:
        """Write the segments that can no longer change (played to the end); all when ``now``
        is None (closing)."""
        with self._lock:
            if self.origin is None and now is not None:
                return  # where audio goes depends on the origin: wait for it
            origin = self.origin if self.origin is not None else (
                self._segments[0][0] if self._segments else 0.0)
            keep = []
            for start, chunk in self._segments:
                if now is None or start + chunk.duration_ms / 1000 <= now:
                    self._writer.write(chunk, at_ms=(start - origin) * 1000)
                else:
                    keep.append((start, chunk))
            self._segments = keep
            self._writer.flush()

    def play(self, chunk: AudioChunk) -> Scheduled:
        with self._lock:
            start = max(time.monotonic(), self._end)
            self._end = start + chunk.duration_ms / 1000
            self._segments.append((start, chunk))
            return Scheduled(start, self._end)

    def clear(self) -> float:
        now = time.monotonic()
        with self._lock:
            kept = []
            for start, chunk in self._segments:
                if start >= now:
                    continue
                played_ms = (now - start) * 1000
                if played_ms < chunk.duration_ms:
                    nbytes = chunk.format.bytes_for_ms(played_ms)
                    chunk = AudioChunk(chunk.data[:nbytes], chunk.format, chunk.start_ms)
                kept.append((start, chunk))
            self._segments = kept
            self._end = min(self._end, now)
        return now

    def idle_at(self) -> float:
        return self._end

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._flusher.join()
        self._write_played(None)
        self._writer.pad_to(self.duration_ms)
        self._writer.close()


class DeviceOutput:
    """Plays through ``devices.Speaker`` from a writer thread, so ``play`` never blocks the loop
    (the speaker's buffer is bounded and ``Speaker.write`` waits for space)."""

    def __init__(self, device: int | str | None = None, rate: int = 22050) -> None:
        import queue

        from edgevoice.audio.devices import Speaker

        self.speaker = Speaker(device, rate=rate).open()
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._gen = 0
        self._end = 0.0
        self._writer = threading.Thread(target=self._write_loop, name="edgevoice-out",
                                        daemon=True)
        self._writer.start()

    def _latency(self) -> float:
        stream = getattr(self.speaker, "_stream", None)
        return float(getattr(stream, "latency", 0.0) or 0.0)

    def play(self, chunk: AudioChunk) -> Scheduled:
        with self._lock:
            start = max(time.monotonic() + self._latency(), self._end)
            self._end = start + chunk.duration_ms / 1000
            self._queue.put((self._gen, chunk))
            return Scheduled(start, self._end)

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            gen, chunk = item
            if gen != self._gen:
                continue
            try:  # a speaker that is gone drops the audio (edgevoice.audio.watch reopens it)
                self.speaker.write(chunk)
            except Exception as exc:  # the writer must outlive a device that failed
                log.debug("speaker write failed: %s", exc)

    def clear(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._gen += 1
            self._end = min(self._end, now)
        self.speaker.clear()
        return now

    def idle_at(self) -> float:
        return self._end

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=5)
        self.speaker.close()
