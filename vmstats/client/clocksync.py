"""Whether time sync has set the clock, as the kernel says (``timedatectl``'s "System clock
synchronized").

At start, a kept stamp far ahead of the clock (laststamp.py) came from a clock behind now (a
reboot without time sync) or from one that was ahead before (set right since): the stamps alone
cannot tell.  A clock that time sync has set is right, so the kept stamp is the wrong one.
chrony, ntpd and systemd-timesyncd clear the kernel's "unsynchronised" flag once they have
set the clock; setting it by hand (``date -s``) raises it again.  Read with adjtimex(2) in
read-only mode (no privilege needed, in a container too).

Standard library only, Python 3.6+.
"""

#: adjtimex(2)'s answer for a clock not synchronised (STA_UNSYNC set).
TIME_ERROR = 5
#: Room for struct timex on every architecture (208 bytes on x86-64); its ``modes``, the first
#: field, left 0 asks for no change.
_TIMEX_BYTES = 512


def synchronized():
    """True if time sync has set the clock, False if not, None where it cannot be asked (no
    adjtimex, no ctypes): the caller then takes no side."""
    try:
        import ctypes  # a Python built without libffi has none

        adjtimex = ctypes.CDLL(None).adjtimex      # the C library the interpreter runs on
    except (ImportError, OSError, AttributeError):
        return None
    state = adjtimex(ctypes.create_string_buffer(_TIMEX_BYTES))
    if state < 0:
        return None
    return state != TIME_ERROR
