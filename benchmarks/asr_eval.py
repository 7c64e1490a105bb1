"""WER and real-time factor of speech recognition on the real clips, batch vs streaming.

    .venv/bin/python benchmarks/asr_eval.py [--backend pocketsphinx|vosk] [--vosk-model DIR]
                                            [--json]

Batch = the whole clip given to the recognizer at once; streaming = 30 ms blocks through our
endpointer, as `edgevoice transcribe` and `listen` do. Prints per-clip and corpus figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgevoice.audio.wavfile import iter_chunks, read_audio
from edgevoice.config import Config
from edgevoice.ear.transcriber import StreamingTranscriber, transcribe_chunks
from edgevoice.evaluation import asr_clips, corpus_wer, speech_dir, word_errors


def make(backend: str, vosk_model: str | None):
    if backend == "vosk":
        from edgevoice.asr.vosk_backend import VoskRecognizer

        return VoskRecognizer(Path(vosk_model))
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer

    return PocketsphinxRecognizer()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["pocketsphinx", "vosk"], default="pocketsphinx")
    ap.add_argument("--vosk-model")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    folder = speech_dir()
    if folder is None:
        print("speech clips not found: set EDGEVOICE_SPEECH_DIR", file=sys.stderr)
        return 2
    rec = make(args.backend, args.vosk_model)
    vad = Config().vad
    rows, batch, stream = [], [], []
    audio_s = batch_s = stream_s = 0.0
    for n, clip in enumerate(asr_clips(folder), 1):
        print(f"[{n}] {clip.path.name}", file=sys.stderr, flush=True)
        audio = read_audio(clip.path)
        t0 = time.perf_counter()
        rec.accept(audio)
        b = rec.finish().text
        t1 = time.perf_counter()
        s = " ".join(u.text for u in transcribe_chunks(iter_chunks(audio, 30),
                                                      StreamingTranscriber(vad, rec)))
        t2 = time.perf_counter()
        audio_s += audio.duration_ms / 1000
        batch_s += t1 - t0
        stream_s += t2 - t1
        batch.append((clip.reference, b))
        stream.append((clip.reference, s))
        eb, n_ref = word_errors(clip.reference, b)
        es, _ = word_errors(clip.reference, s)
        rows.append({"file": clip.path.name, "words": n_ref, "batch_errors": eb,
                     "stream_errors": es, "batch": b, "stream": s})
    summary = {
        "backend": rec.name, "clips": len(rows), "audio_s": round(audio_s, 2),
        "wer_batch": round(corpus_wer(batch), 4), "wer_streaming": round(corpus_wer(stream), 4),
        "rtf_batch": round(batch_s / audio_s, 4), "rtf_streaming": round(stream_s / audio_s, 4),
    }
    if args.json:
        print(json.dumps({"summary": summary, "clips": rows}))
    else:
        for r in rows:
            print(f"{r['file']:55s} words {r['words']:3d}  errors batch {r['batch_errors']:3d}"
                  f"  streaming {r['stream_errors']:3d}")
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
