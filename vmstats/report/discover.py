"""Which sources answer each VM-day, over every data dir and tier (``discover``).

In one data dir a VM-day is answered by its rollup, or by its rows (CSV and
columnar together); several data dirs' rows merge.  A folder, file or tier
file that cannot be read is named as an issue (issues.py), never the end of
the listing.
"""

import functools
import itertools
import operator
import os
from collections.abc import Sequence

from vmstats import logstore
from vmstats.report.aggregate import Source, is_rollup, readable_rollups
from vmstats.report.issues import issue, rollup_lacks
from vmstats.report.settings import InputError, ReportError
from vmstats.words import counted

#: ``{(vm, day): [source]}``: a VM-day's CSV paths and columnar Parts (rows, merged with the
#: last written winning), or one rollup Part (its aggregate, kept after the rows were retired).
Units = dict[tuple[str, int], list[Source]]


def discover(data_dirs: Sequence[str], issues: list[dict] | None = None, raw_only: bool = False) -> Units:
    """``{(vm, day): [sources]}`` over every data dir and tier; ReportError when a dir is unusable.

    In one data dir a VM-day is answered by its rollup when it has one and no
    CSV file (a CSV file beside a rollup holds rows that came after the
    compaction, so the rollup may lack them), else by its rows: CSV and
    columnar together.  ``raw_only`` leaves rollups out (for readers that need
    the records themselves, like the backtest).  A VM folder that cannot be
    listed, a ``.csv`` whose name is not a day or a tier file that cannot be
    read is left out and, with ``issues`` given, named there: one bad entry
    never hides the rest of the fleet.
    """
    units: Units = {}
    # Rows still kept beside a rollup that answers a unit: what merges with another dir's rows.
    rows_of: Units = {}
    issues = [] if issues is None else issues
    for data_dir in data_dirs:
        # Absolute paths key the cache, so a re-run from another folder still finds it.
        data_dir = os.path.abspath(data_dir)
        if not os.path.isdir(data_dir):
            raise InputError("data dir %s does not exist or is not a directory" % data_dir)
        before = len(issues)
        kept: Units | None = {} if len(data_dirs) > 1 else None
        mine, found = _discover_dir(data_dir, issues, raw_only, kept)
        if not found and len(issues) > before:  # there were logs: none could be read
            first = issues[before]
            raise ReportError(
                "data dir %s holds no readable VM logs: %s could not be read (first: %s: %s)"
                % (data_dir, counted(len(issues) - before, "file"), first["path"], first["problem"])
            )
        if not found:
            raise ReportError(
                "data dir %s holds no VM logs (expected %s/<vm>/<day>%s)"
                % (data_dir, logstore.VMS_DIR, logstore.SUFFIX)
            )
        if not units:  # the first data dir: nothing to merge with
            units, rows_of = mine, kept or {}
            continue
        for key, sources in mine.items():
            _merge_unit(units, rows_of, key, sources, issues, kept.get(key) if kept else None)
    return units


def _merge_unit(units: Units, rows_of: Units, key, sources: list, issues: list[dict],
                rows: list | None) -> None:
    """Add one data dir's sources of a unit to ``units`` (``rows``: its columnar rows, when
    a rollup of that dir answers the unit and they are still kept).

    Rows of several data dirs merge exactly (a timestamp resent to two
    aggregators counts once); aggregates cannot, as the same record may be in
    both.  So a unit that every data dir holding it still has rows of is
    answered by those rows, merged, whether or not the dirs also hold its
    rollup (a VM whose agent moved to another aggregator mid-day, compacted in
    both); one that some data dir holds only as a rollup is answered by the
    first such rollup, and the other dirs' sources are named as left out.
    """
    rollup = is_rollup(sources)
    known = units.get(key)
    if known is None:
        units[key] = list(sources)
        if rows is not None:
            rows_of[key] = rows
        return
    known_rows = rows_of.pop(key, None) if is_rollup(known) else known
    new_rows = rows if rollup else sources
    if known_rows is not None and new_rows is not None:
        units[key] = list(known_rows) + list(new_rows)
        return
    if rollup and not is_rollup(known):
        left_out, units[key] = known, list(sources)
    else:
        left_out = sources
    for source in left_out:
        why = ("left out: this VM-day is a rollup in another data dir, "
               "and rollups of several data dirs cannot be merged exactly")
        issues.append(issue(logstore.source_path(source), why, vm=key[0], day=logstore.day_name(key[1])))


def _discover_dir(data_dir: str, issues: list[dict], raw_only: bool,
                  kept: Units | None = None) -> tuple[Units, int]:
    """The units of one data dir (rollups where no CSV file is beside them, rows otherwise),
    and how many entries were found, readable or not.  ``kept``, if given, is filled with
    the columnar rows of the units a rollup answers (for a merge with other data dirs)."""
    csv, found = _discover_csv(data_dir, issues)
    tiers = [logstore.COLUMNAR_DIR] + ([] if raw_only else [logstore.ROLLUPS_DIR])
    # Columnar Parts by unit; rollups as the units they answer ([Part]), the first units found.
    parts: dict[str, dict] = {tier: {} for tier in tiers}
    unused: list[tuple[str, str, int, list[str], object]] = []  # rollups of another version
    vm_ids: set[str] = set()  # names the tier files gave that are VM ids: each checked once
    for tier in tiers:
        held = parts[tier]
        try:
            listed = logstore.tier_days(data_dir, tier)
        except OSError as exc:
            # A file, a FIFO or a link loop where the tier's folder should be holds no days of
            # it: named like any entry that cannot be read, and the other tiers still answer.
            folder = os.path.join(data_dir, tier)
            why = "unreadable %s folder: %s" % (tier, exc.strerror or exc)
            issues.append(issue(folder, why, vm="", day=""))
            continue
        for day, path in listed:
            try:
                number = logstore.day_number(day)
                info = logstore.tier_info(path)
                vms = info["vms"]
                version = info.get("version")
                if tier == logstore.ROLLUPS_DIR and not readable_rollups(version):
                    unused.append((path, day, number, vms, version))
                    continue
            except (OSError, ValueError, KeyError) as exc:
                issues.append(issue(path, "unreadable %s file: %s" % (tier, exc), vm="", day=day))
                continue
            if "disagrees" in info:  # its footer and its table: read as the table holds them
                read = len(vms) if tier == logstore.ROLLUPS_DIR else sum(info["rows"])
                issues.append(issue(path, "damaged %s file: %s" % (tier, info["disagrees"]),
                                    rows=read, vm="", day=day))
            vms = _vm_ids_only(vms, vm_ids, path, day, issues)
            # A file holds up to thousands of VMs: its keys and Parts made without a Python
            # call per VM (~0.1 s of a 90-day report of 1,000 VMs otherwise).
            keys = zip(vms, itertools.repeat(number), strict=False)
            sources = map(_new_part, zip(itertools.repeat(path), vms, itertools.repeat(tier), strict=False))
            if tier == logstore.ROLLUPS_DIR:
                sources = map(list, zip(sources, strict=False))  # each unit's sources: [its Part]
            held.update(zip(keys, sources, strict=True))
    columnar = parts[logstore.COLUMNAR_DIR]
    for path, day, number, vms, version in unused:
        # Rollups no report reads (a newer vmstats wrote them before a downgrade) keep the day's
        # rows until compaction rolls them again: only a VM-day they alone held is missing.
        lost = [vm for vm in vms if (vm, number) not in columnar and (vm, number) not in csv]
        if lost:
            issues.append(issue(path, "unreadable %s file: rollups of another aggregate version (%s), "
                                "and the rows of %d of its %s are gone"
                                % (logstore.ROLLUPS_DIR, version, len(lost), counted(len(vms), "VM")),
                                vm="", day=day))
    units: Units = parts.get(logstore.ROLLUPS_DIR, {})
    retired = []  # units of a CSV file beside the rollup of a day whose rows were retired
    for key in csv.keys() & units.keys():
        if key in columnar:  # a CSV file beside a compacted day: its rows and the day's answer
            del units[key]
        else:
            retired.append(key)
    if retired:
        _late_files(units, csv, retired, issues)
    if kept is not None:
        kept.update((key, [columnar[key]]) for key in columnar.keys() & units.keys())
    for key in (csv.keys() | columnar.keys()) - units.keys():
        # Columnar rows before the CSV's: a row logged after compaction wins its timestamp.
        units[key] = ([columnar[key]] if key in columnar else []) + csv.get(key, [])
    return _sorted_units(units), found + len(units)


def _late_files(units: Units, csv: dict[tuple[str, int], list[str]], retired: list[tuple[str, int]],
                issues: list[dict]) -> None:
    """Decide the ``retired`` units: a CSV file beside the rollup of a day whose rows were retired.

    The CSV file holds only records that came since, which cannot join the VM's rollup (the
    day's other rows are gone): it is left out and named, and the next pass removes it.  But a
    rollup file whose table lacks a VM its footer lists (another hand's tool: the footer has
    as many VMs as the table rows) holds no rollup for those records to join; a pass rolls the
    CSV file up beside the others, so it answers here too, not only after the next pass.  The
    table's VMs are read for that (as a pass reads them), once a file, only for such units: a
    data dir without late files reads nothing more.
    """
    held: dict[str, list[str] | None] = {}
    lacking: dict[str, list[tuple[str, int]]] = {}
    for key in sorted(retired):
        rollup = units[key][0].path
        if rollup not in held:
            try:
                held[rollup] = logstore.table_vms(rollup)
            except (OSError, ValueError):  # unreadable: read_rollups names it for its VMs
                held[rollup] = None
        table = held[rollup]
        if table is not None and key[0] not in table:
            del units[key]  # its CSV file answers, as after the pass that rolls it up
            lacking.setdefault(rollup, []).append(key)
            continue
        for path in csv.pop(key):
            issues.append(issue(path, "left out: it came after its day's rows were retired "
                                "(--retain-raw), so it cannot join the day's rollup",
                                vm=key[0], day=logstore.day_name(key[1])))
    for path, keys in lacking.items():
        table = held[path] or []
        vms = [vm for vm, _day in keys]
        answered = dict.fromkeys(vms, "its CSV file instead, which came after the day's rows were retired")
        for vm, day in keys:
            day_name = logstore.day_name(day)
            issues.append(rollup_lacks(path, table, vms, answered, len(set(table)), vm, day_name))


def _vm_ids_only(vms: list[str], vm_ids: set[str], path: str, day: str, issues: list[dict]) -> list[str]:
    """``vms`` (a tier file's description) less the names that are no VM id, each named.

    The CSV tier's folders are checked so (_discover_csv): a name such as ``=HYPERLINK(...)``
    would reach report.csv as a VM, where a spreadsheet takes it for a formula.  A tier
    file's description is read from the file like a folder's name, so it is checked alike;
    ``vm_ids`` keeps the names found good, and a day's file costs one set difference.
    """
    strangers = set(vms).difference(vm_ids)
    if not strangers:
        return vms
    refused = {vm for vm in strangers if not logstore.is_vm_id(vm)}
    vm_ids.update(strangers - refused)
    if not refused:
        return vms
    issues.append(issue(path, "%s left out: not a VM id of vmstats (docs/PROTOCOL.md), e.g. %s"
                        % (counted(len(refused), "VM name"), logstore.one_line(min(refused))),
                        vm="", day=day))
    return [vm for vm in vms if vm not in refused]


#: ``logstore.Part`` from a ``(path, vm, tier)`` tuple, without the named tuple's Python ``__new__``.
_new_part = functools.partial(tuple.__new__, logstore.Part)


def _sorted_units(units: Units) -> Units:
    """``units`` by VM, then day: sorted by day, then (stably) by VM, each with a C key rather
    than comparing key tuples (~40% faster on a fleet-day file's 1,000 VMs a day)."""
    keys = sorted(units, key=operator.itemgetter(1))
    keys.sort(key=operator.itemgetter(0))
    return dict(zip(keys, map(units.__getitem__, keys), strict=True))


#: How the report names a VM folder or day file it does not read through a symbolic link.
_LINK_LEFT_OUT = ("left out: %s, whose rows this data dir does not count "
                  "(docs/STORAGE.md, \"Symbolic links under vms/\")")


def _followed(data_dir: str, files: list[tuple[str, str]], links: list[str],
              issues: list[dict]) -> list[tuple[str, str]]:
    """``files`` and the day files of ``links`` (symbolic links) that lead elsewhere inside the
    data dir, in day order; the others named as left out (logstore.link_problem), as the
    server does not write through them and compaction leaves them alone."""
    for path in links:
        problem = logstore.link_problem(data_dir, path)
        if problem is None:
            name = os.path.basename(path)
            files.append((name[: -len(logstore.SUFFIX)], path))
        else:
            issues.append(issue(path, _LINK_LEFT_OUT % problem))
    return sorted(files)


def _discover_csv(data_dir: str, issues: list[dict]) -> tuple[dict[tuple[str, int], list[str]], int]:
    """``({(vm, day): [path]}, entries found)`` of one data dir's CSV day files (an unlistable
    VM folder is an entry: the dir is not empty, only that VM unreadable)."""
    units: dict[tuple[str, int], list[str]] = {}
    numbers: dict[str, int] = {}
    found = 0
    not_folders: list[str] = []
    try:
        vms = list(logstore.iter_vms(data_dir, not_folders))
    except (OSError, ValueError) as exc:
        raise ReportError("cannot list logs in %s: %s" % (data_dir, exc)) from None
    for name in not_folders:
        path = os.path.join(data_dir, logstore.VMS_DIR, name)
        what = "a link to nothing" if not os.path.exists(path) else "not a folder"
        issues.append(issue(path, "%s where a VM's folder of logs should be" % what, vm=name))
        found += 1
    for vm in vms:
        if not logstore.is_utf8(vm):
            path = os.path.join(data_dir, logstore.VMS_DIR, vm)
            issues.append(issue(path, "VM folder name is not UTF-8: not a VM id of vmstats", vm=vm))
            found += 1
            continue
        if not logstore.is_vm_id(vm):
            # Never a VM of the report: its name would reach report.csv, where a spreadsheet
            # reads "=..." or "+..." as a formula, and it is named with its control characters
            # escaped, so it stays one line on the terminal.
            shown = logstore.one_line(vm)
            issues.append(issue(os.path.join(data_dir, logstore.VMS_DIR, shown),
                                "VM folder name is not a VM id of vmstats (docs/PROTOCOL.md)", vm=shown))
            found += 1
            continue
        folder = os.path.join(data_dir, logstore.VMS_DIR, vm)
        problem = logstore.link_problem(data_dir, folder) if os.path.islink(folder) else None
        if problem is not None:
            issues.append(issue(folder, _LINK_LEFT_OUT % problem, vm=vm))
            found += 1
            continue
        links: list[str] = []
        try:
            files = logstore.day_files(data_dir, vm, links=links)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            issues.append(issue(folder, "VM folder not listed: %s" % reason, vm=vm))
            found += 1  # it is there: the data dir is not empty, only this VM unreadable
            continue
        if links:
            files = _followed(data_dir, files, links, issues)
        for day, path in files:
            number = numbers.get(day)
            if number is None:  # each VM has the same few days: each name is parsed once
                try:
                    number = numbers[day] = logstore.day_number(day)
                except ValueError:
                    issues.append(issue(path, "not a day file: its name is not YYYY-MM-DD" + logstore.SUFFIX))
                    continue
            units.setdefault((vm, number), []).append(path)
            found += 1
    return units, found
