"""``vmstats rules check FILE``, ``vmstats alerts`` and mutes: the rules' command line."""

import getpass
import json
import os
import sys
import time
import urllib.parse
from collections import Counter

import click

from vmstats import inputfile
from vmstats.options import IntRange, Refused
from vmstats.rules.config import RulesError, read_rules
from vmstats.rules.mutes import MuteError, parse_mute
from vmstats.rules.mutes import describe as describe_mute
from vmstats.serverclient import DEFAULT_URL, ServerURL, ServerURLType, ask, timeout_option
from vmstats.stamps import moment
from vmstats.words import counted


@click.group()
def rules() -> None:
    """Live rules: check a rules file before the server gets it; mute them for maintenance."""


def token_options(command):
    """``--token`` and ``--token-file``: the server's status token, as ``serve`` reads its own."""
    command = click.option(
        "--token-file", type=click.Path(), default=None,
        help="File holding the status token (its first line), as the server's "
             "--status-token-file.")(command)
    return click.option(
        "--token", envvar="VMSTATS_STATUS_TOKEN", default=None,
        help="The server's status token (env VMSTATS_STATUS_TOKEN); prefer --token-file (a "
             "flag shows in ps).")(command)


def read_token(ctx: click.Context, token: str | None, token_file: str | None) -> str | None:
    """The token from ``--token-file`` (which stands in for ``--token``), or ``--token``."""
    if not token_file:
        return token
    # The file stands in for the flag: both given is a mistake; the environment's is a default.
    if ctx.get_parameter_source("token") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--token and --token-file are one setting: give one")
    try:
        return inputfile.read_secret(token_file)
    except inputfile.FileProblem as exc:
        raise Refused("cannot read --token-file: %s" % exc) from None


@rules.command()
@click.argument("path", type=click.Path())
@click.option("--quiet", "-q", is_flag=True, help="Only problems; exit status says the rest.")
def check(path: str, quiet: bool) -> None:
    """Validate a rules file and explain what each rule will do (exit 1: problems, one a line)."""
    try:
        raw = inputfile.read_bytes(path)
    except inputfile.FileProblem as exc:  # no file to check: the command line is wrong
        raise Refused(str(exc)) from None
    try:
        ruleset = read_rules(raw, path)
    except RulesError as exc:
        # Each problem is a failure line as every command words one, so a script or a reader
        # scanning for "Error:" sees all of them; status 1 is the check's verdict.
        for line in str(exc).splitlines():
            click.echo("Error: " + line, err=True)
        sys.exit(1)
    for doubt in ruleset.doubts():  # the file is right; this machine may not be the server's
        click.echo("warning: " + doubt, err=True)
    if quiet:
        return
    for rule in ruleset.rules:
        click.echo(rule.describe())
    for name, action in sorted(ruleset.actions.items()):
        click.echo("action %s: %s%s" % (name, action.kind, "" if action.grouping is None
                                        else "; " + action.grouping.describe()))
    click.echo("%s: %s, %s: OK"
               % (path, counted(len(ruleset.rules), "rule"), counted(len(ruleset.actions), "action")))


def server_options(command):
    """``--url``, ``--timeout`` and the token options of the commands that ask a running server
    (vmstats.serverclient)."""
    command = timeout_option(token_options(command))
    return click.option("--url", type=ServerURLType(), default=DEFAULT_URL, show_default=True,
                        help="The server's HTTP address (its /mutes).")(command)


@rules.command()
@server_options
@click.option("--rule", "rule_names", multiple=True,
              help="A rule's name or glob (repeat for more): its alerts and scaling are muted.")
@click.option("--id", "ids", multiple=True, help="VM ids or globs (web-*), as a rule's match.")
@click.option("--cidr", multiple=True, help="VMs whose id is an address in this network.")
@click.option("--tag", "tags", multiple=True, help="NAME=GLOB: VMs whose tag matches (repeat).")
@click.option("--host", default=None, help="VMs on this host (its glob): --tag host=HOST.")
@click.option("--duration", default=None, help="How long from the start, e.g. 90m or 2h.")
@click.option("--ends", default=None,
              help="When it ends: ISO 8601 (2026-12-06T04:00:00Z; UTC without a zone) or seconds "
                   "since 1970.")
@click.option("--starts", default=None, help="When it begins (default: now), as --ends.")
@click.option("--author", default=None, help="Who makes it (default: the login name).")
@click.option("--comment", default=None, help="Why: the maintenance it is for (required).")
@click.pass_context
def mute(ctx: click.Context, url: ServerURL, token: str | None, token_file: str | None,
         timeout: float, rule_names: tuple[str, ...], ids: tuple[str, ...], cidr: tuple[str, ...],
         tags: tuple[str, ...], host: str | None, duration: str | None, ends: str | None,
         starts: str | None, author: str | None, comment: str | None) -> None:
    """Mute rules' notifications and scaling for planned maintenance (docs/RULES.md, Mutes).

    The rules still evaluate; what the mute covers is not sent or acted on until its end,
    when an alert still firing is notified once.  Prints the mute's id.
    """
    token = read_token(ctx, token, token_file)
    match: dict = {}
    if ids:
        match["id"] = list(ids)
    if cidr:
        match["cidr"] = list(cidr)
    wanted: dict[str, str] = {}
    for pair in tags + (("host=" + host,) if host is not None else ()):
        name, sep, glob = pair.partition("=")
        if not sep or not name:
            raise Refused("--tag %r: expected NAME=GLOB, e.g. owner=web-team" % pair)
        if name in wanted:
            raise Refused("tag %s is given twice (--tag and --host name the same tag)" % name)
        wanted[name] = glob
    if wanted:
        match["tags"] = wanted
    data: dict = {"author": author if author is not None else _login()}
    for key, value in (("match", match), ("rule", list(rule_names)), ("duration", duration),
                       ("ends", ends), ("starts", starts), ("comment", comment)):
        if value:
            data[key] = value
    try:  # the server checks the same, in the same words; refused here without a round trip
        parse_mute(data, time.time())
    except MuteError as exc:
        raise Refused(str(exc)) from None
    made = ask(url, "/mutes", token, "POST", data, timeout)
    click.echo(_mute_line(made))


@rules.command()
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
@click.pass_context
def mutes(ctx: click.Context, url: ServerURL, token: str | None, token_file: str | None,
          timeout: float, as_json: bool) -> None:
    """The mutes in force and to come, one a line, ending soonest first."""
    page = ask(url, "/mutes", read_token(ctx, token, token_file), timeout=timeout)
    if not isinstance(page, dict) or not isinstance(page.get("mutes"), list):
        raise click.ClickException("%s is not a vmstats /mutes page" % url.url("/mutes"))
    if as_json:
        click.echo(json.dumps(page, indent=1, sort_keys=True))
        return
    click.echo(counted(len(page["mutes"]), "mute"))
    for entry in page["mutes"]:
        click.echo("  " + _mute_line(entry))


@rules.command()
@click.argument("mute_id", metavar="ID")
@server_options
@click.pass_context
def unmute(ctx: click.Context, mute_id: str, url: ServerURL, token: str | None,
           token_file: str | None, timeout: float) -> None:
    """End a mute now: an alert it held back that still fires is notified once."""
    ended = ask(url, "/mutes?id=" + urllib.parse.quote(mute_id, safe=""),
                read_token(ctx, token, token_file), "DELETE", timeout=timeout)
    click.echo("ended " + _mute_line(ended))


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container): the author must be given
        return ""


def _mute_line(entry) -> str:
    """One line for a mute the server answered with."""
    try:
        return describe_mute(entry)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):  # [] or null too
        raise click.ClickException("the server's answer is not a mute: %.200r" % (entry,)) from None


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default="vmstats-data",
              show_default=True, help="The server's data dir (its action log is read; not with --url).")
@click.option("--url", type=ServerURLType(), default=None,
              help="Ask a running server instead, e.g. http://127.0.0.1:8898 (its /alerts); with "
                   "its status token for per-VM states and the log.")
@token_options
@timeout_option
@click.option("--recent", type=IntRange(0), default=20, show_default=True,
              help="Log entries to list.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: the /alerts page from either source (docs/RULES.md).")
@click.pass_context
def alerts(ctx: click.Context, data_dir: str, url: ServerURL | None, token: str | None,
           token_file: str | None, timeout: float, recent: int, as_json: bool) -> None:
    """Current rule states (not ok first) and the action log's recent entries."""
    one_source(ctx, url is not None)
    token = read_token(ctx, token, token_file)
    if url:
        page = from_server(url, token, timeout)
    else:
        page = from_log(data_dir)
    if as_json:
        click.echo(json.dumps(page, indent=1, sort_keys=True))
        return
    if "states" not in page:
        raise click.ClickException("the server gives per-VM states only with its status token "
                                   "(--token-file)")
    states = page["states"]
    # The log holds a scope only once it changed state (a scope starts ok without a word), so
    # offline the count is of those: said, lest it read as a disagreement with /alerts.
    where = "" if url else " in the action log (those that ever changed state; /alerts counts all)"
    not_ok = sum(1 for s in states if s["state"] != "ok")
    click.echo("%s%s, %d not ok" % (counted(len(states), "scope"), where, not_ok))
    for s in states:
        if s["state"] != "ok":
            value = "" if s.get("value") is None else " value %.4g" % s["value"]
            if s.get("last_value") is not None:  # the data stopped: no current value
                value = " no current value (last %.4g at %s)" % (s["last_value"],
                                                                moment(s["last_value_at"]))
            muted = " muted by %s" % s["muted"] if s.get("muted") else ""
            click.echo("  %-18s %-24s %-18s since %s%s%s" % (s["state"], s["rule"], s["scope"],
                                                              moment(s["since"]), value, muted))
    deliveries = page.get("deliveries", {})
    dropped = deliveries.get("dropped")
    click.echo("deliveries pending: %d%s" % (deliveries.get("pending", 0),
                                            ", %d dropped (past max_pending)" % dropped if dropped else ""))
    for entry in page["recent"][-recent:] if recent else []:
        click.echo("  " + describe(entry))


#: ``alerts``' options that only asking a running server (``--url``) uses.
_SERVER_ONLY = ("timeout", "token", "token_file")


def one_source(ctx: click.Context, asks_server: bool) -> None:
    """Refuse an option of the source not read: ``--timeout`` or a token without ``--url`` (the
    log is read, and they were dropped without a word), ``--data-dir`` with it.  A token from
    the environment (VMSTATS_STATUS_TOKEN) is a default for every command, not refused."""
    given = [p for p in ctx.command.params
             if ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE]
    if asks_server:
        if any(p.name == "data_dir" for p in given):
            raise click.UsageError("--data-dir and --url are two sources: give one (--url asks a "
                                   "running server, --data-dir reads its action log)")
        return
    idle = [p.opts[0] for p in given if p.name in _SERVER_ONLY]
    if idle:
        raise click.UsageError("%s only with --url: without it the action log in --data-dir is "
                               "read, which needs no server" % " and ".join(idle))


def from_server(url: ServerURL, token: str | None, timeout: float) -> dict:
    """The server's /alerts page; one ClickException line when it cannot be had or read
    (``ask``), or is not the /alerts page (another service on that port)."""
    where = url.url("/alerts")
    page = ask(url, "/alerts", token, timeout=timeout)
    if not (isinstance(page, dict) and isinstance(page.get("recent", []), list)
            and isinstance(page.get("states", []), list)):
        raise click.ClickException("%s is not a vmstats /alerts page" % where)
    page.setdefault("recent", [])
    return page


def from_log(data_dir: str) -> dict:
    """The /alerts page (with the token's details) from the action log alone: the server may be
    stopped. Counts are of the scopes the log holds (those that ever changed state)."""
    from vmstats.rules.actionlog import FILE_NAME, read
    from vmstats.rules.mutes import MuteSet
    from vmstats.rules.service import counts_page, deliveries_page, rules_dir

    if not os.path.isdir(data_dir):  # a mistyped --data-dir: the command line, not the run
        raise Refused("data dir %s does not exist or is not a directory" % data_dir)
    folder = rules_dir(data_dir)
    if not os.path.isdir(folder):
        raise click.ClickException("no action log folder at %s (is --data-dir right, and was the "
                                   "server run with --rules?)" % folder)
    path = os.path.join(folder, FILE_NAME)
    # The server makes the folder at start and the log at the first change of state: until
    # then every scope is ok, which is an answer, not an error.
    try:
        state = read(path)
    except OSError as exc:
        raise click.ClickException("cannot read the action log: %s" % exc) from None
    mutes = MuteSet(folder)
    try:
        mutes.load(time.time())
    except OSError as exc:
        raise click.ClickException("cannot read the mutes: %s" % exc) from None
    if state.damage.count:
        click.echo("warning: " + state.damage.note(path), err=True)
    states = [dict({"rule": e["rule"], "scope": e["scope"], "state": e["to"], "since": e["at"],
                    "value": e.get("value")},
                   **{name: e[name] for name in ("last_value", "last_value_at") if name in e})
              for e in state.states.values()]
    states.sort(key=lambda r: (r["state"] == "ok", -r["since"]))
    # What only the running server knows (its rules file, its series in memory) is null here,
    # so a script reads every key of either page with the same code.
    return {"rules": None, "series": None, "series_refused": None,
            "counts": counts_page(Counter((s["rule"], s["state"]) for s in states)),
            "deliveries": deliveries_page(len(state.pending), state.outcomes),
            "states": states, "recent": list(state.recent),
            "mutes": [m.as_dict() for m in sorted(mutes.mutes.values(), key=lambda m: m.ends)]}


def describe(entry: dict) -> str:
    """One line for a log entry."""
    from vmstats.rules.notifiers import summary

    kind = entry.get("type")
    if kind == "event":
        event = entry["event"]
        if event["kind"] == "held":
            text = "%s: scale %s held by %s" % (event["rule"], event["direction"], event["reason"]
                                                if event.get("mute") is None
                                                else "mute " + event["mute"])
        else:
            text = summary(event)
        return "%s event   %s [%s]" % (moment(event["at"]), text, event["key"])
    when = moment(entry["at"]) if "at" in entry else "-" * 20
    if kind == "muted":
        return "%s muted    %s by mute %s" % (when, entry["key"], entry["mute"])
    if kind == "unmuted":
        return "%s unmuted  mute %s ended" % (when, entry["mute"])
    if kind == "result":
        return "%s %s %s" % (when, "done    " if entry.get("ok") else "failed  ",
                             entry["key"] + ("" if entry.get("ok") else ": " + entry.get("error", "")))
    return "%s %-8s %s%s" % (when, kind, entry.get("key", ""),
                             " #%d" % entry["n"] if "n" in entry else "")
