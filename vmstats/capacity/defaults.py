"""How demand is judged by default, in one place the commands' options and the server's config
can read without loading numpy (demand.Settings takes its defaults from here).

docs/CAPACITY.md ("What the defaults rest on") says why each is what it is.
"""

#: Percentile of a host's summed demand over the window: a plan lets at most
#: 100 - PERCENTILE per cent of host-minutes pass its limit (0.1%).
PERCENTILE = 99.9
#: Minutes of the block whose peak each VM counts at every minute of it: an hour.
PEAK_MINUTES = 60
#: Share of a host's VMs that may be stopped (silent for stopped_after_hours, or named by the
#: inventory and never heard from in the window) before the host is unknown: past it the host's
#: figure rests more on VMs not heard from than on VMs measured, and a host cut off from the
#: aggregator, or whose agents stopped sending, looks the same as one whose VMs were shut down.
STOPPED_SHARE_MAX = 0.5
#: A stopped VM (allocated, not reporting) keeps room on its host: its own level of when it ran,
#: which it takes back when it starts.  Nova's placement counts a stopped instance's allocation
#: too; False frees its room for others (where stopped means deleted soon, or shelved).
RESERVE_STOPPED = True
#: A VM made smaller is judged on its use since (capped by the new size) once it has run this
#: long at the new size, and counted at the new size's whole allocation until then.  Its use at
#: the larger size says nothing of the smaller one, and every hour of the day has to be seen at
#: the new size once: the hourly peaks and the percentile assume the daily cycle repeats, the
#: hours not yet seen could be anything up to the size.
SHRUNK_SETTLE_HOURS = 24.0
#: Days ahead a host's rising trend (the slope of its daily levels) is projected and added to its
#: demand; a falling one is never credited, and 0 projects nothing.
HORIZON_DAYS = 7.0
#: PERCENTILE as the options and the config spell it.
PERCENTILE_TEXT = "p%g" % PERCENTILE
