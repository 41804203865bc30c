"""Simulated fleets and trace replay, sent through the real protocol to a real server."""
