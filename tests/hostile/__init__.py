"""Hostile input for each C part, run under the sanitizers by driver.py (sanitizers.py).

A module per C part, each with ``run() -> int`` (how many inputs it sent): plain functions,
not tests, so pytest collects none of them; test_server_sanitizers.py runs them all.
answers.py is no part: it writes down a part's calls for the sanitized run to make again.
"""
