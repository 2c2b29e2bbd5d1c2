"""Reliability: crash safety (SIGKILL at every load stage) and concurrent loads, with real processes."""
