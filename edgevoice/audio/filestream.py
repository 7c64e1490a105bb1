"""Audio files read block by block: an hour of 48 kHz stereo costs a few MB, not 1.4 GB.

``wavfile.read_audio`` decodes a whole file as float32 and resamples it in memory, which is
right for clips and wrong for a long recording handed to `edgevoice transcribe`. This yields the
same int16 mono blocks at the processing rate (down-mixed, scaled and resampled with soxr's
streaming resampler) while reading the file one second at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgevoice.audio.format import AudioChunk, AudioFormat
from edgevoice.audio.resample import StreamResampler, to_mono
from edgevoice.audio.wavfile import check_audio_file
from edgevoice.errors import UserError

READ_SECONDS = 1.0


def stream_audio(path: str | os.PathLike, rate: int, block_ms: float) -> Iterator[AudioChunk]:
    """Blocks of ``block_ms`` of int16 mono at ``rate``, with timeline-correct ``start_ms``."""
    import soundfile

    path = Path(path)
    check_audio_file(path)
    fmt = AudioFormat(rate=rate, channels=1, width=2)
    step = fmt.bytes_for_ms(block_ms)
    if step <= 0:
        raise ValueError(f"block of {block_ms} ms is shorter than one sample")
    try:
        sf = soundfile.SoundFile(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise UserError(f"cannot read {path} as audio ({exc}); convert it to WAV first, e.g. "
                        f"`sox {path.name} -b 16 out.wav`") from None
    with sf:
        if sf.frames == 0:
            raise UserError(f"audio file {path} is empty (it holds no samples): record or "
                            "export it again")
        resampler = StreamResampler(sf.samplerate, rate)
        pending = bytearray()
        sent = 0  # bytes yielded so far
        frames = max(1, int(sf.samplerate * READ_SECONDS))
        while True:
            # Read as float and convert ourselves: libsndfile does not scale float files.
            block = sf.read(frames, dtype="float32", always_2d=True)
            last = len(block) < frames
            mono = to_mono(block) if len(block) else np.zeros(0, np.float32)
            pcm = np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)
            pending += resampler.process(pcm, last=last).tobytes()
            while len(pending) >= step or (last and pending):
                data = bytes(pending[:step])
                del pending[:step]
                yield AudioChunk(data, fmt, fmt.ms_for_bytes(sent))
                sent += len(data)
            if last:
                return
