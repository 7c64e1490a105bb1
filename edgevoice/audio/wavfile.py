"""Audio files in and out. Any rate, channel count and PCM/float encoding libsndfile reads (WAV,
FLAC, OGG) comes in as 16-bit mono at the processing rate; output is written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgevoice.audio.format import AudioChunk, AudioFormat
from edgevoice.audio.resample import resample, to_mono
from edgevoice.errors import UserError

# How audio containers begin: a file that starts like one of these is audio in a format or
# codec libsndfile cannot decode (worth converting); anything else is not an audio file at all.
_AUDIO_MAGIC = (
    (0, b"RIFF"), (0, b"RIFX"), (0, b"RF64"), (0, b"FORM"), (0, b"fLaC"), (0, b"OggS"),
    (0, b"ID3"), (0, b".snd"), (0, b"caff"), (0, b"#!AMR"), (0, b"wvpk"),
    (0, b"MAC "), (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMA
    (4, b"ftyp"),  # MP4 / M4A
)


def _looks_like_audio(head: bytes) -> bool:
    if any(head[at : at + len(magic)] == magic for at, magic in _AUDIO_MAGIC):
        return True
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0  # MPEG / AAC frames


def check_audio_file(path: str | os.PathLike) -> None:
    """Fail early, with the fix, on a file ``read_audio`` will not read: missing, empty, not
    audio, or audio in a format libsndfile cannot decode (only that one is worth converting)."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file {path} does not exist")
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise UserError(f"cannot read audio file {path}: {exc.strerror}") from None
    if not head:
        raise UserError(f"audio file {path} is empty (0 bytes): record or export it again")
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        if not _looks_like_audio(head):
            raise UserError(f"{path} is not an audio file: give a WAV, FLAC or OGG recording"
                            ) from None
        raise UserError(
            f"cannot read {path} as audio ({exc}); convert it to WAV first, e.g. "
            f"`sox {path.name} -b 16 out.wav`"
        ) from None
    if info.frames <= 0:
        raise UserError(f"audio file {path} is empty (it holds no samples): record or export "
                        "it again")


def read_audio(path: str | os.PathLike, rate: int = 16000) -> AudioChunk:
    """Read a whole file as int16 mono at ``rate`` (down-mixed, then resampled with soxr)."""
    import soundfile

    path = Path(path)
    check_audio_file(path)
    try:
        # Read as float and convert ourselves: libsndfile does not scale float files to int16.
        samples, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise UserError(
            f"cannot read {path} as audio ({exc}); convert it to WAV first, e.g. "
            f"`sox {path.name} -b 16 out.wav`"
        ) from None
    if not len(samples):
        raise UserError(f"audio file {path} is empty (it holds no samples): record or export "
                        "it again")
    mono = resample(to_mono(samples), file_rate, rate)
    pcm = np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)
    return AudioChunk.from_samples(pcm, rate)


def iter_chunks(audio: AudioChunk, block_ms: float) -> Iterator[AudioChunk]:
    """Split audio into consecutive blocks of ``block_ms`` with timeline-correct start times."""
    step = audio.format.bytes_for_ms(block_ms)
    if step <= 0:
        raise ValueError(f"block of {block_ms} ms is shorter than one sample")
    for offset in range(0, len(audio.data), step):
        yield AudioChunk(
            audio.data[offset : offset + step],
            audio.format,
            audio.start_ms + audio.format.ms_for_bytes(offset),
        )


class WavWriter:
    """Writes int16 mono audio placed on a timeline; gaps are filled with silence.

    Written to a temporary file beside the target and renamed into place on ``close()``, so a
    crash never leaves a half-written file under the final name.
    """

    def __init__(self, path: str | os.PathLike, rate: int) -> None:
        self.path = Path(path)
        self.format = AudioFormat(rate=rate, channels=1, width=2)
        self._buf = bytearray()
        self._closed = False

    def write(self, chunk: AudioChunk, at_ms: float | None = None) -> None:
        """Append ``chunk`` (resampled if needed); with ``at_ms``, place it at that time."""
        data = chunk.data
        if chunk.format != self.format:
            samples = to_mono(chunk.samples())
            data = resample(samples, chunk.format.rate, self.format.rate).tobytes()
        if at_ms is not None:
            offset = self.format.bytes_for_ms(at_ms)
            if offset > len(self._buf):
                self._buf.extend(bytes(offset - len(self._buf)))
            end = offset + len(data)
            if end > len(self._buf):
                self._buf.extend(bytes(end - len(self._buf)))
            current = np.frombuffer(self._buf[offset:end], dtype="<i2").astype(np.int32)
            mixed = current + np.frombuffer(data, dtype="<i2")
            self._buf[offset:end] = np.clip(mixed, -32768, 32767).astype("<i2").tobytes()
        else:
            self._buf.extend(data)

    def pad_to(self, ms: float) -> None:
        """Extend with silence up to ``ms`` so the file covers the whole timeline."""
        want = self.format.bytes_for_ms(ms)
        if want > len(self._buf):
            self._buf.extend(bytes(want - len(self._buf)))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        write_wav_atomic(self.path, bytes(self._buf), self.format.rate)

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_wav_atomic(path: str | os.PathLike, pcm16_mono: bytes, rate: int) -> None:
    """Write a 16-bit mono WAV via a temp file and ``os.replace``."""
    import wave

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh, wave.open(fh, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            wav.writeframes(pcm16_mono)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets, not for audio
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
