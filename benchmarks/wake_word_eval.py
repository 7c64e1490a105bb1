"""Wake-phrase spotting on the shared clips, through the daemon's own path (VAD-gated
pocketsphinx keyphrase search): false wakes on every clip that is not a wake-word recording, and
detections on the wake-word recordings, per phrase and threshold.

    .venv/bin/python benchmarks/wake_word_eval.py [--thresholds -10 -20 -30 -40]
"""

from __future__ import annotations

import argparse
import sys

from edgevoice.audio.wavfile import iter_chunks, read_audio
from edgevoice.config import ActivationConfig, Config
from edgevoice.ear.activation import make_spotter
from edgevoice.ear.endpoint import SpeechAudio, SpeechEnd, SpeechStart, UtteranceSegmenter
from edgevoice.evaluation import read_manifest, speech_dir

# phrase -> expected detections per wake-word clip (porcupine__multiple_keywords says each of
# these once, "porcupine" twice; "picovoice" is not in the dictionary)
TARGETS = {
    "hey mycroft": {"voice2json__hey_mycroft_wakeword.wav": 1},
    "porcupine": {"porcupine__porcupine_wakeword.wav": 1, "porcupine__multiple_keywords.wav": 2},
    "grasshopper": {"porcupine__multiple_keywords.wav": 1},
    "terminator": {"porcupine__multiple_keywords.wav": 1},
    "hey computer": {},
}


def detections(path, phrase: str, threshold: float) -> int:
    spotter = make_spotter(ActivationConfig(mode="wake_word", wake_phrase=phrase,
                                            wake_threshold=threshold))
    segmenter = UtteranceSegmenter(Config().vad)
    count = 0
    chunks = list(iter_chunks(read_audio(path, 16000), 30))
    events = [e for c in chunks for e in segmenter.feed(c)] + list(segmenter.flush())
    for event in events:
        if isinstance(event, SpeechStart):
            spotter.start()
        elif isinstance(event, SpeechAudio):
            count += spotter.process(event.chunk.data)
        elif isinstance(event, SpeechEnd):
            spotter.end()
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[-10, -20, -30, -40])
    args = parser.parse_args()
    folder = speech_dir()
    if folder is None:
        print("speech clips not found (set EDGEVOICE_SPEECH_DIR)", file=sys.stderr)
        return 2
    clips = read_manifest(folder)
    wake = [c for c in clips if c.category == "wakeword"]
    other = [c for c in clips if c.category != "wakeword"]
    hours = sum(c.duration_s for c in other) / 3600
    print(f"{len(other)} non-wake-word clips ({hours * 60:.1f} min), {len(wake)} wake-word clips")
    print(f"{'phrase':14s} {'thr':>5s} {'false wakes':>11s} {'per hour':>8s}  wake-word clips "
          "(found/expected)")
    for phrase, expected in TARGETS.items():
        for thr in args.thresholds:
            false = sum(detections(c.path, phrase, thr) for c in other)
            # a wake-word clip counts as negative for phrases it does not contain
            false += sum(detections(c.path, phrase, thr) for c in wake
                         if c.path.name not in expected)
            hits = " ".join(f"{name.split('__')[1][:-4]} {detections(folder / name, phrase, thr)}"
                            f"/{n}" for name, n in expected.items())
            print(f"{phrase:14s} {thr:5.0f} {false:11d} {false / hours:8.1f}  {hits or '-'}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
