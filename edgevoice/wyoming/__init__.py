"""Home Assistant's Wyoming protocol: an adapter over the agent's own ear, brain and voice."""
