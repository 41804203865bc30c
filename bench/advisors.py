"""The published idle-VM rules, applied to the raw trace rows of the deciding window.

As the vendors document them (the wording this follows is quoted in BENCHMARKS.md):

- **AWS Trusted Advisor, "Low Utilization Amazon EC2 Instances"**: an
  instance is flagged when its *daily* CPU utilization was 10% or less and
  its network I/O 5 MB or less on at least 4 of the last 14 days.  Here: per
  UTC day with data, the mean CPU % of the day's rows and the day's network
  received + sent (KB/s x the seconds a row stands for, 300 in the published
  trace; MB = 10^6 bytes); flagged when at least 4 days of the window qualify.
- **Azure Advisor, shutdown recommendation**: over the last 7 days, metrics
  are aggregated to 30 minutes (the maximum of the finer averages); a
  shutdown is recommended when the P95 of the maximum CPU utilization is
  below 3%, the P100 of the average CPU over the last 3 days is at most 2%,
  and outbound network utilization is below 2% over the seven days.  The
  trace has no link speed, so "2%" is taken of an assumed 1 Gbit/s link
  (2.5 MB/s): every 30-minute mean of transmitted bytes must stay below it.
  The 7 and 3 days are the last ones of the deciding window.

Like labels.py this reads nothing but the raw rows (labels.Trace); a VM
flagged by a rule counts as reclaimed by that rule.
"""

import numpy as np
from labels import Trace

DAY = 86400
TA_CPU, TA_NET_MB, TA_DAYS, TA_LOOKBACK = 10.0, 5.0, 4, 14
AZ_BUCKET, AZ_DAYS, AZ_RECENT_DAYS = 1800, 7, 3
AZ_CPU_P95_MAX, AZ_CPU_RECENT_AVG, AZ_NET_SHARE, AZ_LINK_BYTES = 3.0, 2.0, 0.02, 125e6


def trusted_advisor(t: Trace, start: int, end: int) -> bool:
    w = t.window(max(start, end - TA_LOOKBACK * DAY), end)
    if not len(w.ts):
        return False
    day = w.ts // DAY
    days, index = np.unique(day, return_inverse=True)
    cpu_mean = np.bincount(index, weights=w.cpu) / np.bincount(index)
    net_mb = np.bincount(index, weights=w.net) * 1024 * w.step / 1e6
    low = (cpu_mean <= TA_CPU) & (net_mb <= TA_NET_MB)
    return int(low.sum()) >= TA_DAYS


def azure_advisor(t: Trace, start: int, end: int) -> bool:
    w = t.window(max(start, end - AZ_DAYS * DAY), end)
    if not len(w.ts):
        return False
    bucket = w.ts // AZ_BUCKET
    buckets, index = np.unique(bucket, return_inverse=True)
    cpu_max = np.full(len(buckets), -np.inf)
    np.maximum.at(cpu_max, index, w.cpu)
    cpu_avg = np.bincount(index, weights=w.cpu) / np.bincount(index)
    tx_avg = np.bincount(index, weights=w.net_tx) / np.bincount(index) * 1024
    recent = buckets * AZ_BUCKET >= end - AZ_RECENT_DAYS * DAY
    return bool(
        np.percentile(cpu_max, 95) < AZ_CPU_P95_MAX
        and recent.any()
        and cpu_avg[recent].max() <= AZ_CPU_RECENT_AVG
        and tx_avg.max() < AZ_NET_SHARE * AZ_LINK_BYTES
    )


RULES = {"AWS Trusted Advisor": trusted_advisor, "Azure Advisor": azure_advisor}
