"""Soak: many turns in file mode with the tiny model; memory, threads and fds must stay flat.

    .venv/bin/python benchmarks/soak_file_mode.py [--turns 1000] [--gap 2.5]

Builds one long input from the speech clips in shared/speech (each followed by `--gap` s of
silence; file mode runs in real time, so 1,000 turns take about an hour), runs `edgevoice run
--input ... --output ... --json` with a random tiny GGUF (devtools.gguf_model), samples the
process's RSS, thread count and open fds from /proc every second, and prints: RSS after the
warm-up (the first 10 % of turns) and at the end (growth %), threads and fds min/max after
warm-up, and utterances heard vs turns answered or reported (issue 16 item 6: growth <= 5 %,
threads and fds flat, every utterance accounted for).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile

from edgevoice.devtools.gguf_model import write_tiny_gemma2
from edgevoice.evaluation import speech_dir


def _clips() -> list[np.ndarray]:
    folder = speech_dir()
    if folder is None:
        raise SystemExit("no speech clips (shared/speech) here")
    out = []
    for path in sorted(Path(folder).glob("*.wav")):
        audio, rate = soundfile.read(path, dtype="int16", always_2d=True)
        if rate == 16000 and 0.8 < len(audio) / rate < 6:
            out.append(audio[:, 0])
    return out


def _write_input(path: Path, turns: int, gap: float) -> float:
    clips, silence = _clips(), np.zeros(int(gap * 16000), np.int16)
    seconds = 0.0
    with soundfile.SoundFile(str(path), "w", 16000, 1, "PCM_16") as f:
        f.write(np.zeros(16000, np.int16))
        for i in range(turns):
            clip = clips[i % len(clips)]
            f.write(clip)
            f.write(silence)
            seconds += (len(clip) + len(silence)) / 16000
    return seconds


def _sample(pid: int) -> tuple[float, int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    return rss_mb, int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=1000)
    ap.add_argument("--gap", type=float, default=2.5, help="silence after each clip, s")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = write_tiny_gemma2(tmp / "tiny.gguf")
        seconds = _write_input(tmp / "in.wav", args.turns, args.gap)
        config = tmp / "soak.yaml"  # short answers: each is spoken before the next question
        config.write_text("llm:\n  max_tokens: 12\n")
        print(f"{args.turns} clips, {seconds / 60:.1f} min of input (real time)", flush=True)
        log = open(tmp / "stderr.log", "w+")  # a file, not a pipe: an hour of warnings
        proc = subprocess.Popen(  # would fill a pipe nobody reads until the end
            [sys.executable, "-m", "edgevoice", "--config", str(config), "run", "--input",
             str(tmp / "in.wav"), "--output", str(tmp / "out.wav"), "--json", "--llm-model",
             str(model)],
            stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)})
        counts = {"utterance": 0, "turn": 0, "ignored": 0, "error": 0}
        reasons: dict[str, int] = {}
        samples: list[tuple[int, float, int, int]] = []  # (turns so far, rss, threads, fds)

        def read_events() -> None:
            for line in proc.stdout:
                event = json.loads(line)
                kind = event.get("event")
                if kind == "ignored":
                    reason = str(event.get("reason", "?"))
                    reasons[reason] = reasons.get(reason, 0) + 1
                if kind == "transcript":
                    counts["utterance"] += 1
                elif kind in counts:
                    counts[kind] += 1

        reader = threading.Thread(target=read_events, daemon=True)
        reader.start()
        started, shown = time.monotonic(), 0
        while proc.poll() is None:
            try:
                samples.append((counts["turn"], *_sample(proc.pid)))
            except (OSError, KeyError):
                break
            if counts["utterance"] >= shown + max(1, args.turns // 20):
                shown = counts["utterance"]
                _, rss, threads, fds = samples[-1]
                print(f"  {time.monotonic() - started:6.0f} s: {shown} utterances, "
                      f"{counts['turn']} turns, RSS {rss:.1f} MB, threads {threads}, fds {fds}",
                      file=sys.stderr, flush=True)
            time.sleep(1.0)
        proc.wait()
        reader.join(10)
        log.seek(0)
        err = log.read()
        log.close()
    if proc.returncode != 0:
        print(err[-3000:], file=sys.stderr)
        return 1
    # after the warm-up, and not the last seconds (the input's tail and the shutdown, when
    # threads end and memory is given back)
    warm = [s for s in samples[:-10] if s[0] >= max(1, args.turns // 10)] or samples
    rss0, rss1 = warm[0][1], max(s[1] for s in warm)
    threads = [s[2] for s in warm]
    fds = [s[3] for s in warm]
    # every utterance is a turn or an `ignored` event (own voice, stale, ...): none unaccounted
    unaccounted = counts["utterance"] - counts["turn"] - counts["ignored"]
    print(f"utterances heard {counts['utterance']}, turns {counts['turn']}, ignored "
          f"{counts['ignored']} {reasons or ''}, errors {counts['error']}, "
          f"unaccounted {unaccounted}")
    print(f"RSS after warm-up {rss0:.1f} MB, highest after it {rss1:.1f} MB "
          f"({(rss1 - rss0) / rss0 * 100:+.1f} %), at the end {warm[-1][1]:.1f} MB")
    print(f"threads after warm-up {min(threads)}..{max(threads)}, fds {min(fds)}..{max(fds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
