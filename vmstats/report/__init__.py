"""The reclamation report: loading per-VM logs, statistics, policy, savings, rendering."""
