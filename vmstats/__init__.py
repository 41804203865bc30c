"""vmstats: a push-model VM usage stats aggregator and reclamation reporter."""

__version__ = "0.1.0"
