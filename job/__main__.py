"""`python -m job`: serve the job application, or run and manage imports from the command line.

    python -m job                      serve on 0.0.0.0:$PORT (what Connect runs)
    python -m job sync <type> [...]    request an import and run it now, in the foreground, with progress
                                       (waits while another runner holds it, unless --no-wait)
    python -m job request <type> [...] only record the request; the scheduled runs work on it
    python -m job run                  work on pending imports for one time budget (what the scheduler does)
    python -m job status               a table of all imports
    python -m job stop <type>          cancel an import
    python -m job dead-letters list [--since ISO]         deliveries that failed for good
    python -m job dead-letters replay (--id KEY ... | --all)   process them again
    python -m job dead-letters purge --before ISO          delete old records
    python -m job erasures list                           customers erased (ids and hashes, never emails)
    python -m job erasures remove --id CUSTOMER_ID ...    forget erasure records (their data may come back)
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from job import progress
from job.progress import ProgressLine
from job.requests import BadRequest, parse_request
from job.state import IMPORT_TYPES, Busy, ImportRecord, now, parse_iso
from shared.cli import serve, startup
from shared.config import Settings
from shared.errors import ApiError, ConnectorError

TYPES = (*IMPORT_TYPES, "all")
WAIT_POLL_SECONDS = 1.0  # while another runner holds the import


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = startup(require_klaviyo=not getattr(args, "dry_run", False) and not _commercetools_only(args))
    if getattr(args, "dry_run", False):
        settings = dataclasses.replace(settings, dry_run=True)
    if args.command in (None, "serve"):
        from job.app import create_app

        serve(create_app, settings)
        return 0
    from job.service import JobService
    from shared.context import build_context, close_context

    context = build_context(settings)
    try:
        return _COMMANDS[args.command](JobService(context), settings, args)
    except BadRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Busy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ConnectorError as exc:
        print(f"error: {exc.describe() if isinstance(exc, ApiError) else exc}", file=sys.stderr)
        return 1
    finally:
        close_context(context)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m job", description="Bulk imports from commercetools to Klaviyo.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the job application (the default)")
    for name, text in (("sync", "request an import (or resume the same unfinished one) and run it now"),
                       ("request", "record an import request for the scheduled runs")):
        command = commands.add_parser(name, help=text)
        command.add_argument("type", choices=TYPES)
        command.add_argument("--ids", nargs="+", metavar="ID", help="only these ids")
        command.add_argument("--start-id", help="only ids from this one on (in id order)")
        command.add_argument("--created-from", help="ISO date-time (customers, orders)")
        command.add_argument("--created-to", help="ISO date-time (customers, orders)")
        command.add_argument("--modified-from", help="ISO date-time of lastModifiedAt (customers, orders)")
        command.add_argument("--modified-to", help="ISO date-time of lastModifiedAt (customers, orders)")
        command.add_argument("--delete-all", action="store_true", help="delete every catalog object of this type")
        command.add_argument("--confirm", help="repeat the type to confirm --delete-all")
        command.add_argument("--dry-run", action="store_true",
                             help="send nothing to Klaviyo; write the requests to dryRun.file" if name == "sync"
                             else "a dry-run import (kept apart from the real ones)")
        if name == "sync":
            command.add_argument("--no-wait", action="store_true",
                                 help="exit (code 3) when another runner holds the import, instead of waiting")
    run = commands.add_parser("run", help="work on pending imports for one time budget, like the scheduler")
    run.add_argument("--dry-run", action="store_true", help="send nothing to Klaviyo")
    status = commands.add_parser("status", help="show all imports")
    status.add_argument("--dry-run", action="store_true", help="show the dry-run imports (kept apart)")
    stop = commands.add_parser("stop", help="cancel an import")
    stop.add_argument("type", choices=TYPES)
    stop.add_argument("--dry-run", action="store_true", help="cancel a dry-run import")
    letters = commands.add_parser("dead-letters", help="deliveries the event app could never process")
    actions = letters.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a table of the records")
    listing.add_argument("--since", type=iso_instant, help="only records last seen at or after this ISO date-time")
    replay = actions.add_parser("replay", help="process records again; success removes them")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", nargs="+", dest="ids", metavar="KEY", help="the records' keys (message ids)")
    which.add_argument("--all", action="store_true", help="every record")
    purge = actions.add_parser("purge", help="delete records last seen before a date")
    purge.add_argument("--before", required=True, type=iso_instant,
                       help="ISO 8601 date or date-time, e.g. 2026-11-01 or 2026-11-01T00:00:00Z (UTC if no offset)")
    erasures = commands.add_parser("erasures", help="records of erased customers (nothing is sent about them)")
    erasure_actions = erasures.add_subparsers(dest="action", required=True)
    erasure_actions.add_parser("list", help="a table of the records")
    forget = erasure_actions.add_parser("remove", help="delete records: later data about them is sent again")
    forget.add_argument("--id", nargs="+", dest="ids", required=True, metavar="KEY",
                        help="the records' keys (the customer ids)")
    return parser


def _commercetools_only(args: argparse.Namespace) -> bool:
    """Commands that never call Klaviyo, and so need no Klaviyo key."""
    return args.command in ("request", "status", "stop", "erasures") or (
        args.command == "dead-letters" and args.action in ("list", "purge"))


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?")


def iso_instant(text: str) -> str:
    """An ISO 8601 date or date-time (extended format; UTC when no offset is given) as a UTC ISO string; anything
    else is refused (argparse exits with code 2 and says why)."""
    moment = None
    if _ISO.fullmatch(text.strip()):
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if moment is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or date-time "
                                         "(e.g. 2026-11-01 or 2026-11-01T00:00:00Z)")
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"ids": args.ids, "startId": args.start_id, "createdFrom": args.created_from,
                            "createdTo": args.created_to, "modifiedFrom": args.modified_from,
                            "modifiedTo": args.modified_to}
    if args.delete_all:
        body |= {"deleteAll": True, "confirmDeletion": args.confirm}
    return {key: value for key, value in body.items() if value is not None}


def _request(service: Any, _settings: Settings, args: argparse.Namespace) -> int:
    for record in service.request(args.type, _body(args)):
        print(f"{record.type}: requested")
    return 0


def _sync(service: Any, settings: Settings, args: argparse.Namespace) -> int:
    with ProgressLine() as line:
        summaries, types = _sync_with(service, args, line)
    _table(summaries)
    if settings.dry_run:
        print(f"dry run: nothing was sent; the requests are in {settings.dry_run_file}")
    return 0 if all(s["status"] == "completed" for s in summaries) and len(summaries) == len(types) else 1


def _sync_with(service: Any, args: argparse.Namespace,
               line: ProgressLine) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """Request the import(s) and run them with progress; while another runner holds one, wait for it (its
    progress shown) unless `--no-wait`. An import of the same request that the other runner finishes meanwhile is
    not run again."""
    options = _body(args)
    types = IMPORT_TYPES if args.type == "all" else (args.type,)
    while True:
        try:
            records = service.request(args.type, options)
            break
        except Busy:
            if args.no_wait:
                raise
            held = [r for r in map(service.store.get, types) if r and r.status == "running" and r.lease_live()]
            if not held:
                continue  # let go meanwhile
            _wait_for(service, held[0], line)
            done = service.store.get(held[0].type)
            if (args.type != "all" and done and done.status == "completed"
                    and done.request == parse_request(done.type, options)):
                return [done.summary()], types  # the other runner did it
    types = tuple(r.type for r in records)
    totals = {r.type: progress.total(service.context.commercetools, r) for r in records}
    read_before = {r.type: r.counts["read"] if r.status == "running" else 0 for r in records}  # resumed ones

    def show(record: ImportRecord, elapsed: float) -> None:
        line.show(progress.describe(record, elapsed, read_before[record.type], totals.get(record.type)),
                  force=record.status != "running")

    summaries = service.run(budget_seconds=float("inf"), types=types, progress=show)
    line.finish()
    return summaries, types


def _wait_for(service: Any, record: ImportRecord, line: ProgressLine) -> None:
    """Until the runner holding this import lets it go (finished, stopped, or its lease ran out)."""
    line.say(f"{record.type}: {record.holder()}; waiting for it (Ctrl-C to stop waiting)")
    expected = progress.total(service.context.commercetools, record)
    began, read_before = time.monotonic(), record.counts["read"]
    while record.status == "running" and record.lease_live():
        line.show(f"waiting for {record.holder()}: "
                  f"{progress.describe(record, time.monotonic() - began, read_before, expected)}")
        expires = parse_iso(record.lease["expiresAt"]) if record.lease else now()
        time.sleep(min(WAIT_POLL_SECONDS, max((expires - now()).total_seconds() + 0.01, 0.01)))
        current = service.store.get(record.type)
        if current is None:
            break
        record = current
    line.finish()


def _run(service: Any, _settings: Settings, _args: argparse.Namespace) -> int:
    summary = service.scheduled_run()
    _table(summary["imports"])
    for result in summary.get("deadLetters", []):
        print(f"dead letter {result['key']}: {result['outcome']}")
    return 0


def _status(service: Any, _settings: Settings, _args: argparse.Namespace) -> int:
    _table(service.status())
    return 0


def _stop(service: Any, _settings: Settings, args: argparse.Namespace) -> int:
    stopped = service.stop(args.type)
    if not stopped:
        print(f"no {args.type} import is running")
        return 1
    for record in stopped:
        print(f"{record.type}: cancelled")
    return 0


def _table(summaries: list[dict[str, Any]]) -> None:
    if not summaries:
        print("no imports")
        return
    print(f"{'type':<11}{'status':<11}{'read':>9}{'sent':>9}{'skipped':>9}{'failed':>8}  {'updated':<21}last error")
    for s in summaries:
        c = s["counts"]
        print(f"{s['type']:<11}{s['status']:<11}{c['read']:>9}{c['sent']:>9}{c['skipped']:>9}{c['failed']:>8}  "
              f"{s.get('updatedAt') or '':<21}{(s.get('lastError') or '')[:80]}")


def _dead_letters(service: Any, _settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "list":
        entries = service.dead_letters(args.since)
        if not entries:
            print("no dead letters")
            return 0
        print(f"{'key':<38}{'last seen':<22}{'tries':>5}  {'message type':<26}{'resource':<46}reason")
        for e in entries:
            resource = e.get("resource") or {}
            where = f"{resource.get('typeId', '?')} {resource.get('id', '')}" if resource else "-"
            print(f"{e['key'][:37]:<38}{e.get('lastSeen', ''):<22}{e.get('attempts', 0):>5}  "
                  f"{(e.get('messageType') or e.get('notificationType') or '-')[:25]:<26}{where[:45]:<46}"
                  f"{e.get('reason', '')[:100]}")
        return 0
    if args.action == "purge":
        print(f"{service.purge_dead_letters(args.before)} dead letters deleted")
        return 0
    entries = service.dead_letters()
    if not args.all:
        wanted = set(args.ids)
        missing = wanted - {e["key"] for e in entries}
        if missing:
            print(f"error: no dead letter with key {', '.join(sorted(missing))}", file=sys.stderr)
            return 2
        entries = [e for e in entries if e["key"] in wanted]
    results = service.replay_dead_letters(entries)
    for result in results:
        print(f"{result['key']}: {result['outcome']}")
    done = sum(r["outcome"] in ("processed", "ignored") for r in results)
    print(f"{done} of {len(results)} replayed successfully and removed")
    return 0 if done == len(results) else 1


def _erasures(service: Any, _settings: Settings, args: argparse.Namespace) -> int:
    from shared import erasures

    commercetools = service.context.commercetools
    if args.action == "list":
        entries = erasures.entries(commercetools)
        if not entries:
            print("no erasure records")
            return 0
        print(f"{'key':<38}{'erased at':<22}email hash (HMAC-SHA256)")
        for e in entries:
            print(f"{e['key'][:37]:<38}{e.get('erasedAt', ''):<22}{e.get('emailHash') or '-'}")
        print(f"{len(entries)} erasure records")
        return 0
    missing = [key for key in args.ids if not erasures.remove(commercetools, key)]
    for key in args.ids:
        if key not in missing:
            print(f"{key}: removed")
    if missing:
        print(f"error: no erasure record with key {', '.join(missing)}", file=sys.stderr)
        return 2
    return 0


_COMMANDS = {"request": _request, "sync": _sync, "run": _run, "status": _status, "stop": _stop,
             "dead-letters": _dead_letters, "erasures": _erasures}

if __name__ == "__main__":
    sys.exit(main())
