"""The validation stand-in for the agent: replays what it hears into the speaker, with a known
added delay. ``python -m edgevoice.latency.echo`` reads ``$PULSE_SOURCE`` with ``parec`` and
writes ``$PULSE_SINK`` with ``pacat`` (48 kHz mono), through an in-process queue.

Delays change on stdin (``delay MS`` lines) by inserting that much silence into the queue, in a
quiet gap, without restarting the streams: source and sink share one clock, so the audio in
flight (the echo's own I/O floor) stays the same for the whole run, and the floor measured once
at 0 ms holds for every delay. It prints ``ready`` once audio flows and ``delay MS`` after each
change. Only ever increase the delay (silence cannot be taken back out without cutting audio).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading

RATE = 48000
BYTES_PER_MS = RATE * 2 // 1000


def main() -> int:
    env = dict(os.environ)
    rec = subprocess.Popen(["parec", "--raw", "--format=s16le", "--channels=1",
                            f"--rate={RATE}", "--latency-msec=10"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = subprocess.Popen(["pacat", "--playback", "--raw", "--format=s16le", "--channels=1",
                            f"--rate={RATE}", "--latency-msec=250"], env=env,
                           stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    # A cushion of silence from the start: part of the floor (measured at 0 ms, constant), it
    # keeps pacat fed through a scheduling hiccup on a busy machine (an underrun would stretch
    # the delay for the rest of the run).
    base_ms = int(os.environ.get("EDGEVOICE_ECHO_BASE_MS", "100"))
    queue: collections.deque[bytes] = collections.deque([b"\0" * (base_ms * BYTES_PER_MS)])
    ready = threading.Event()
    more = threading.Condition()
    state = {"delay_ms": 0, "closed": False}

    def reader() -> None:
        assert rec.stdout is not None
        fd = rec.stdout.fileno()
        while block := os.read(fd, 960):  # 10 ms
            with more:
                queue.append(block)
                more.notify()
            ready.set()
        with more:
            state["closed"] = True
            more.notify()

    def writer() -> None:
        assert out.stdin is not None
        while True:
            with more:
                while not queue and not state["closed"]:
                    more.wait()
                if not queue:
                    return
                block = queue.popleft()
            try:
                out.stdin.write(block)
                out.stdin.flush()
            except (BrokenPipeError, ValueError):
                return

    threads = [threading.Thread(target=reader, daemon=True),
               threading.Thread(target=writer, daemon=True)]
    for t in threads:
        t.start()
    try:
        if not ready.wait(10):
            print("error: no audio from parec", flush=True)
            return 1
        print("ready", flush=True)
        for line in sys.stdin:
            words = line.split()
            if len(words) == 2 and words[0] == "delay":
                want = int(words[1])
                add = want - state["delay_ms"]
                if add > 0:
                    with more:  # silence behind what is queued (all silence, in a gap)
                        queue.append(b"\0" * (add * BYTES_PER_MS))
                        more.notify()
                    state["delay_ms"] = want
                print(f"delay {state['delay_ms']}", flush=True)
    finally:
        for proc in (rec, out):
            proc.terminate()
        for proc in (rec, out):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
