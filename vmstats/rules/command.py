"""``vmstats rules check FILE`` and ``vmstats alerts``: the rules' command line."""

import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

import click

from vmstats import inputfile
from vmstats.options import IntRange, Refused
from vmstats.rules.config import RulesError, read_rules
from vmstats.words import counted


@click.group()
def rules() -> None:
    """Live rules: check a rules file before the server gets it."""


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
    if quiet:
        return
    for rule in ruleset.rules:
        click.echo(rule.describe())
    for name, action in sorted(ruleset.actions.items()):
        click.echo("action %s: %s%s" % (name, action.kind, "" if action.grouping is None
                                        else "; " + action.grouping.describe()))
    click.echo("%s: %s, %s: OK"
               % (path, counted(len(ruleset.rules), "rule"), counted(len(ruleset.actions), "action")))


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default="vmstats-data",
              show_default=True, help="The server's data dir (its action log is read).")
@click.option("--url", default=None,
              help="Ask a running server instead, e.g. http://127.0.0.1:8898 (its /alerts).")
@click.option("--token", envvar="VMSTATS_STATUS_TOKEN", default=None,
              help="With --url: the server's status token (env VMSTATS_STATUS_TOKEN), for "
                   "per-VM states and the log; prefer --token-file (a flag shows in ps).")
@click.option("--token-file", type=click.Path(), default=None,
              help="File holding the status token (its first line), as the server's "
                   "--status-token-file.")
@click.option("--recent", type=IntRange(0), default=20, show_default=True,
              help="Log entries to list.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: the /alerts page from either source (docs/RULES.md).")
@click.pass_context
def alerts(ctx: click.Context, data_dir: str, url: str | None, token: str | None,
           token_file: str | None, recent: int, as_json: bool) -> None:
    """Current rule states (not ok first) and the action log's recent entries."""
    if token_file:
        # The file stands in for the flag: both given is a mistake; the environment's is a default.
        if ctx.get_parameter_source("token") is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("--token and --token-file are one setting: give one")
        try:
            token = inputfile.read_secret(token_file)
        except inputfile.FileProblem as exc:
            raise Refused("cannot read --token-file: %s" % exc) from None
    if url:
        page = from_server(url, token)
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
            click.echo("  %-18s %-24s %-18s since %s%s" % (s["state"], s["rule"], s["scope"],
                                                            _when(s["since"]), value))
    deliveries = page.get("deliveries", {})
    dropped = deliveries.get("dropped")
    click.echo("deliveries pending: %d%s" % (deliveries.get("pending", 0),
                                            ", %d dropped (past max_pending)" % dropped if dropped else ""))
    for entry in page["recent"][-recent:] if recent else []:
        click.echo("  " + describe(entry))


def from_server(url: str, token: str | None) -> dict:
    """The server's /alerts page; one ClickException line when it cannot be had or read.

    A URL that is no URL (``notaurl``, ``http://[::1``), a refused connection, an HTTP
    error and an answer that is not the /alerts page (another service on that port) are
    each one line naming the address, not a traceback.
    """
    where = url.rstrip("/") + "/alerts"
    try:
        request = urllib.request.Request(where)
        if token:
            request.add_header("Authorization", "Bearer " + token)
        with urllib.request.urlopen(request, timeout=10) as response:
            page = json.load(response)
    except urllib.error.HTTPError as exc:
        raise click.ClickException("cannot read %s: HTTP %d %s" % (where, exc.code, exc.reason)) from None
    except urllib.error.URLError as exc:
        raise click.ClickException("cannot read %s: %s" % (where, exc.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise click.ClickException("cannot read %s: %s" % (where, str(exc) or type(exc).__name__)) from None
    if not (isinstance(page, dict) and isinstance(page.get("recent", []), list)
            and isinstance(page.get("states", []), list)):
        raise click.ClickException("%s is not a vmstats /alerts page" % where)
    page.setdefault("recent", [])
    return page


def from_log(data_dir: str) -> dict:
    """The /alerts page (with the token's details) from the action log alone: the server may be
    stopped. Counts are of the scopes the log holds (those that ever changed state)."""
    from vmstats.rules.actionlog import FILE_NAME, read
    from vmstats.rules.service import counts_page, deliveries_page, rules_dir

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
    if state.damage.count:
        click.echo("warning: " + state.damage.note(path), err=True)
    states = [{"rule": e["rule"], "scope": e["scope"], "state": e["to"], "since": e["at"],
               "value": e.get("value")} for e in state.states.values()]
    states.sort(key=lambda r: (r["state"] == "ok", -r["since"]))
    # What only the running server knows (its rules file, its series in memory) is null here,
    # so a script reads every key of either page with the same code.
    return {"rules": None, "series": None, "series_refused": None,
            "counts": counts_page(Counter((s["rule"], s["state"]) for s in states)),
            "deliveries": deliveries_page(len(state.pending), state.outcomes),
            "states": states, "recent": list(state.recent)}


def describe(entry: dict) -> str:
    """One line for a log entry."""
    from vmstats.rules.notifiers import summary

    kind = entry.get("type")
    if kind == "event":
        event = entry["event"]
        if event["kind"] == "held":
            text = "%s: scale %s held by %s" % (event["rule"], event["direction"], event["reason"])
        else:
            text = summary(event)
        return "%s event   %s [%s]" % (_when(event["at"]), text, event["key"])
    when = _when(entry["at"]) if "at" in entry else "-" * 20
    if kind == "result":
        return "%s %s %s" % (when, "done    " if entry.get("ok") else "failed  ",
                             entry["key"] + ("" if entry.get("ok") else ": " + entry.get("error", "")))
    return "%s %-8s %s%s" % (when, kind, entry.get("key", ""),
                             " #%d" % entry["n"] if "n" in entry else "")


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
