"""The VM agent: samples /proc and pushes records.  Standard library only, Python 3.6+."""
