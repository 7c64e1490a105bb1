"""Peak memory of `edgevoice transcribe` on a long 48 kHz stereo recording (issue 16 item 5).

    .venv/bin/python benchmarks/long_file_rss.py [--minutes 60]

Writes the file block by block into a temp dir (60 min = 691 MB), runs `transcribe` on it and
on a 2-second file, and prints both peak RSS figures (wait4) and the wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from edgevoice.devtools.long_audio import child_peak_rss_mb, write_long_wav


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for seconds in (2.0, args.minutes * 60):
            path = write_long_wav(Path(tmp) / f"{seconds:.0f}s.wav", seconds, burst_every_s=0)
            started = time.perf_counter()
            code, rss, err = child_peak_rss_mb([sys.executable, "-m", "edgevoice", "transcribe",
                                                str(path)])
            wall = time.perf_counter() - started
            if code != 0:
                print(err, file=sys.stderr)
                return 1
            rows.append((seconds, path.stat().st_size / 1e6, rss, wall))
            path.unlink()
    for seconds, size_mb, rss, wall in rows:
        print(f"{seconds / 60:7.1f} min 48 kHz stereo ({size_mb:6.0f} MB): peak RSS "
              f"{rss:6.1f} MB, {wall:6.1f} s")
    print(f"growth with length: {rows[1][2] - rows[0][2]:+.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
