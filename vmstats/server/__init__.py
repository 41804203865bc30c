"""The aggregator: Twisted listeners, the buffer, the scheduled pooled flusher, self-metrics."""
