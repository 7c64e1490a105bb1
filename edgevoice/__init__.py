"""edgevoice: an on-device voice agent that listens, understands and answers out loud, offline."""

__version__ = "0.1.0"
