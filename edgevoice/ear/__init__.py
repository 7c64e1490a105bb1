"""The ear: everything between the microphone and a final transcript, one stage per module.

Read top to bottom as the audio flows (each stage pure and clock-free where it can be, so a new
stage plugs in without touching the others):

    input (edgevoice.audio.devices.Microphone, kept open by edgevoice.audio.watch; or a file)
      -> [echo canceller: to come]
      -> gate.py         webrtcvad + noise gate (+ Silero, silero.py, before an utterance
                         starts): one speech decision per frame
      -> endpoint.py     frames -> utterances (onset, pause, hangover, pre-roll, max length)
      -> [turn detector: to come]
      -> transcriber.py  utterance audio -> streaming recognizer (edgevoice.asr backends)
                         -> partial and final transcripts
      -> activation.py   which speech becomes a turn (always / push-to-talk / wake word)
"""
