"""Streaming speech recognition behind the ``Recognizer`` protocol; one module per backend."""
