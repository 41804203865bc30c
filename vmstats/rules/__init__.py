"""Live rules on the incoming records: states, transitions, actions and scaling.

Laid out like Aodh: evaluation and state in one place (``evaluator.py``, with
the target-tracking arithmetic in ``scaling.py``), one module per kind of
action behind one small interface (``notifiers/``), and between them the
fsync'd action log (``actionlog.py``) that every transition and every
delivery attempt reaches before anything is sent.  ``service.py`` is the
Twisted service that joins them to the aggregator; ``config.py`` reads and
checks the TOML rules file.
"""
