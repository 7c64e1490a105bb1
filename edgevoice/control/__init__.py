"""The local control API: JSON lines over a Unix socket (server on the agent's loop; sync
client)."""
