"""Echo path detection (ear/echo.py ``EchoPath``) on simulated rooms: never "no echo" where echo
comes back, and how soon it says so where none does.

    python benchmarks/echo_path_eval.py [--set tuning|held-out]

The far ends are espeak-ng sentences, the talkers real clips from shared/speech, the rooms
``devtools.room.RoomSetting``. ``tuning`` is what the thresholds were chosen on (2 talkers, 2
sentences, 7 fixed rooms); ``held-out`` uses other clips, other voices and 10 random rooms
(30-150 ms, -3..-30 dB, random reflections, half of them with noise). Prints the false "no echo"
decisions and the decision times with no echo (listening, and talking from the answer's start).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgevoice.audio.wavfile import read_audio
from edgevoice.devtools.room import RoomSetting, mix
from edgevoice.ear.echo import EchoPath
from edgevoice.evaluation import speech_dir

RATE = 16000
SETS = {
    "tuning": {
        "talkers": ["speechbrain__spk1_snt1.wav", "pocketsphinx__goforward.wav"],
        "far": [("en-us", 175, 50, "me " * 30),
                ("en-us", 175, 50, "The weather in Paris is sunny today, with a high of twenty "
                 "two degrees. Would you like me to set a reminder for your trip tomorrow?")],
    },
    "held-out": {
        "talkers": ["pocketsphinx__librivox_sense_and_sensibility_0870.wav",
                    "pocketsphinx__cards_003.wav", "deepspeech__arctic_a0024.wav",
                    "speechbrain__spk2_snt2.wav", "speechbrain__example2.wav",
                    "cheetah__test_en_norm.wav"],
        "far": [("en-us", 190, 50, "Sure. I have turned off the kitchen lights and the hallway "
                 "lights. Anything else you need?"),
                ("en-gb", 150, 70, "It is seven degrees outside, cloudy with a chance of rain "
                 "later in the evening."),
                ("en-us+f3", 175, 50, "Your next meeting starts in fifteen minutes, in room four "
                 "on the second floor.")],
    },
}
TUNING_ROOMS = [RoomSetting(30, -3), RoomSetting(60, -9), RoomSetting(60, -20),
                RoomSetting(150, -30), RoomSetting(300, -20),
                RoomSetting(60, -30, noise_dbfs=-65),
                RoomSetting(100, -25, reflections=((40, -6), (90, -12)))]


def held_out_rooms(seed: int = 11) -> list[RoomSetting]:
    rng = np.random.default_rng(seed)
    rooms = []
    for _ in range(10):
        refl = tuple((float(rng.uniform(5, 80)), float(rng.uniform(-20, -4))) for _ in range(3))
        noise = None if rng.random() < 0.5 else float(rng.uniform(-75, -55))
        rooms.append(RoomSetting(float(rng.uniform(30, 150)), float(rng.uniform(-30, -3)), refl,
                                 noise))
    return rooms


def decided_at(mic: np.ndarray, far: np.ndarray) -> float | None:
    """Seconds into the answer when ``EchoPath`` says "no echo", or None."""
    path = EchoPath(RATE // 100)
    for i in range(0, len(mic) - 480, 480):
        path.add(mic[i:i + 480], far[i:i + 480])
        if path.absent:
            return round(i / RATE, 2)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=sorted(SETS), default="held-out")
    args = ap.parse_args()
    folder = speech_dir()
    if folder is None:
        print("speech clips not found: set EDGEVOICE_SPEECH_DIR", file=sys.stderr)
        return 2
    spec = SETS[args.set]
    rooms = TUNING_ROOMS if args.set == "tuning" else held_out_rooms()
    talkers = [read_audio(folder / n, RATE).samples().astype(np.float64) for n in spec["talkers"]]
    fars = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (voice, speed, pitch, text) in enumerate(spec["far"]):
            wav = Path(tmp) / f"far{k}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w",
                            str(wav), text], check=True, capture_output=True)
            fars.append(read_audio(wav, RATE).samples().astype(np.float64))
    false, cases, listening, talking = 0, 0, [], []
    for far in fars:
        played = mix(far)
        listening.append(decided_at(mix(np.zeros(len(far))), played))
        for talker in talkers:
            near = np.zeros(len(far))
            n = min(len(talker), len(far))
            near[:n] = talker[:n]
            talking.append(decided_at(mix(near), played))
            for room in rooms:
                cases += 1
                false += decided_at(mix(room.apply(far, RATE), near), played) is not None
        for room in rooms:
            cases += 1
            false += decided_at(mix(room.apply(far, RATE)), played) is not None
    found = [t for t in talking if t is not None]
    print(f"set {args.set}: {len(fars)} far ends, {len(talkers)} talkers, {len(rooms)} rooms")
    print(f"false 'no echo' with echo: {false} of {cases}")
    print(f"no echo, listening: decided at {listening} s")
    print(f"no echo, talking from the answer's start: {len(found)} of {len(talking)} decided "
          f"within the answer, median {np.median(found) if found else float('nan'):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
