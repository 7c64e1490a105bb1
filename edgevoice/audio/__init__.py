"""Audio types, files, resampling and devices. Only ``devices`` imports sounddevice."""

from edgevoice.audio.format import PCM16_MONO_16K, AudioChunk, AudioFormat

__all__ = ["AudioChunk", "AudioFormat", "PCM16_MONO_16K"]
