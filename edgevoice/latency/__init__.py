"""`edgevoice bench latency`: voice-to-voice measured at the speaker on one PulseAudio clock."""
