"""How demand is judged by default, in one place the commands' options and the server's config
can read without loading numpy (demand.Settings takes its defaults from here).

docs/CAPACITY.md ("What the defaults rest on") says why each is what it is.
"""

#: Percentile of a host's summed demand over the window: a plan lets at most
#: 100 - PERCENTILE per cent of host-minutes pass its limit (0.1%).
PERCENTILE = 99.9
#: Minutes of the block whose peak each VM counts at every minute of it: an hour.
PEAK_MINUTES = 60
#: PERCENTILE as the options and the config spell it.
PERCENTILE_TEXT = "p%g" % PERCENTILE
