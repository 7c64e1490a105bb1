"""Speech output: text cleaning and clause splitting, the Synthesizer protocol, its backends."""
