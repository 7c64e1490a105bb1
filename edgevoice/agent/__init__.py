"""The conversation: turns, their metrics, built-in intents and the turn manager."""
