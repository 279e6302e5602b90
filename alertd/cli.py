"""The `alertd` command line: every command (see COMMANDS), its one-line errors and exit codes."""

from __future__ import annotations

# Each command imports what it uses inside its function: `alertd --help`, `list`, `subscribe`
# and `preview` must not pay for the web app, the scheduler or the mail stack (a test checks).
import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, NoReturn

from alertd import __version__
from alertd.schedule import FREQUENCIES, next_period_start

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from alertd.config import Settings
    from alertd.schedule import Frequency

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by SIGINT


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: scripts and people read it the same way.
        self.exit(EXIT_BAD_INPUT, f"alertd: error: {message} (see alertd --help)\n")


def _date_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    # The global options go before or after the command, as people type them: after it, a
    # subcommand only sets them when given (SUPPRESS), so it never undoes one given before.
    common = _Parser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS, help="TOML settings file"
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    parser = _Parser(
        prog="alertd",
        description="Email alerts for UK Parliament written questions, answers and statements.",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML settings file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"alertd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub = commands.add_parser("subscribe", parents=[common], help="add an alert")
    sub.add_argument("email")
    sub.add_argument(
        "query",
        help='e.g. "special educational needs" or member:4138 (one starting with -, '
        "after --: alertd subscribe EMAIL -- '-nhs funding')",
    )
    sub.add_argument("--frequency", default="daily", help="|".join(FREQUENCIES))
    sub.add_argument("--confirmed", action="store_true", help="skip e-mail confirmation")
    sub.add_argument("--force", action="store_true", help="save even a very broad alert")
    sub.add_argument(
        "--on",
        metavar="STAGES",
        help="tabled,answered | answered: what to hear about (default: answered; "
        "tabled,answered for member:/asker: follows)",
    )

    listing = commands.add_parser(
        "list",
        parents=[common],
        help="list alerts",
        description="Active alerts, a line each: id, address, frequency, status, what the alert "
        "hears of (answered, or tabled,answered), query; tab-separated.",
    )
    listing.add_argument("email", nargs="?")

    stop = commands.add_parser("unsubscribe", parents=[common], help="stop an alert")
    stop.add_argument("alert_id", type=int)

    preview = commands.add_parser("preview", parents=[common], help="stored answers a query finds")
    preview.add_argument("query")
    preview.add_argument("--days", type=int, default=30)

    run = commands.add_parser("run", parents=[common], help="run the daemon")
    run.add_argument("--once", action="store_true", help="one poll, match and send, then exit")

    status = commands.add_parser("status", parents=[common], help="health at a glance")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    back = commands.add_parser(
        "backfill", parents=[common], help="load past answers, statements and debates, no alerts"
    )
    back.add_argument("--from", dest="first", required=True, type=_date_arg, metavar="YYYY-MM-DD")
    back.add_argument("--to", dest="last", type=_date_arg, metavar="YYYY-MM-DD")

    feeds = commands.add_parser("feeds", parents=[common], help="RSS/Atom feeds as sources")
    feed_actions = feeds.add_subparsers(dest="feed_action", required=True, parser_class=_Parser)
    feed_add = feed_actions.add_parser("add", parents=[common], help="poll a feed")
    feed_add.add_argument("name")
    feed_add.add_argument("url")
    feed_add.add_argument("--interval", type=int, metavar="MINUTES", help="poll interval")
    feed_actions.add_parser("list", parents=[common], help="the feeds and their state")
    feed_remove = feed_actions.add_parser("remove", parents=[common], help="stop polling a feed")
    feed_remove.add_argument("name")

    commands.add_parser("web", parents=[common], help="serve the web pages and JSON API")

    sample = commands.add_parser(
        "render-sample", parents=[common], help="write the digest someone would get now"
    )
    sample.add_argument("email")
    sample.add_argument(
        "--out", default="digest-sample", metavar="PATH", help="writes PATH.eml and PATH.html"
    )
    sample.add_argument("--days", type=int, default=30, help="answers to use if none pending")

    bounce = commands.add_parser(
        "bounce", parents=[common], help="act on a bounce or complaint read on stdin (for the MTA)"
    )
    bounce.add_argument(
        "--recipient", metavar="ADDRESS", help="the address it was delivered to (${recipient})"
    )

    db = commands.add_parser("db", parents=[common], help="database maintenance")
    db.add_argument("action", choices=["upgrade"])

    export = commands.add_parser(
        "export", parents=[common], help="subscribers and alerts as JSON lines"
    )
    export.add_argument("--out", metavar="FILE", help="write to FILE (mode 0600), not stdout")
    load = commands.add_parser(
        "import", parents=[common], help="add subscribers and alerts from JSON lines"
    )
    load.add_argument("file", metavar="FILE", help="an `alertd export`, or - for stdin")
    return parser


# Engines a command opened, closed when it returns (a PostgreSQL pool left to the garbage
# collector warns, and holds server connections until exit).
_opened: list[Engine] = []


def utc_now() -> datetime:
    return datetime.now(UTC)


def _database(settings: Settings) -> Engine:
    from alertd.db import open_database

    engine = open_database(settings.database)
    _opened.append(engine)
    return engine


def _look_up_members(engine: Engine, settings: Settings, names: list[str]) -> None:
    """Ask the Members API (as the web's Member search does) for each name the Member table
    does not know yet: a fresh install knows no Members until answers arrive."""
    import asyncio

    from alertd.sources.members import local_members, search_key, search_members

    for name in names:
        known = local_members(engine, name)
        if any(search_key(hit.name) == search_key(name) for hit in known):
            continue
        asyncio.run(search_members(engine, settings, name, utc_now()))


def _first_mail(settings: Settings, frequency: Frequency, now: datetime) -> str:
    """When an alert of this frequency mails first (if anything new matches by then)."""
    due = next_period_start(frequency, now, settings.digest)
    if due is None:
        return "within minutes of a match (an answer, question or statement) reaching alertd"
    return f"in the {frequency} digest of {due:%a %d %b %Y at %H:%M} ({settings.digest.timezone})"


def _cmd_subscribe(args: argparse.Namespace, settings: Settings) -> int:
    from alertd import queries
    from alertd.addresses import normalise_email
    from alertd.errors import UsageError
    from alertd.schedule import parse_frequency
    from alertd.subscriptions import lifecycle
    from alertd.subscriptions.vocabulary import NotifyOn

    # Whatever can be checked without the database is checked first: bad input writes nothing.
    normalise_email(args.email)
    frequency = parse_frequency(args.frequency)
    queries.check_query_words(args.query)
    notify_on = None if args.on is None else NotifyOn.parse(args.on)
    names = queries.member_names(args.query)
    engine = _database(settings)
    if names:
        _look_up_members(engine, settings, names)
    rate = queries.daily_match_rate(engine, args.query)
    if rate > queries.BROAD_ALERT_PER_DAY:
        verdict = "saving it anyway (--force)" if args.force else "use --force to save it anyway"
        message = (
            f"this alert would have matched {rate:.0f} answers a day over the stored history "
            f"(more than {queries.BROAD_ALERT_PER_DAY}); narrow it down, or {verdict}"
        )
        if not args.force:
            raise UsageError(message)
        print(f"alertd: warning: {message}", file=sys.stderr)
    now = utc_now()
    alert = lifecycle.subscribe(
        engine,
        args.email,
        args.query,
        frequency,
        confirmed=args.confirmed,
        now=now,
        notify_on=notify_on,
        refuse_duplicate=True,
    )
    assert alert.id is not None
    email = lifecycle.subscriber_email(engine, alert.subscriber_id)
    # What it hears about, when more than answers (a Member follow's default, or --on).
    stages = ", questions as tabled and answered" if alert.notify_on.hears("tabled") else ""
    print(f"alert {alert.id} saved: {email}, {alert.query}, {alert.frequency}{stages}")
    if alert.confirmed:
        print(f"first mail: {_first_mail(settings, frequency, now)}, if anything matches")
    else:
        from alertd.mail.transactional import queue_confirmation

        queue_confirmation(settings, engine, alert.id, now=now)
        print(
            f"unconfirmed: a confirmation mail to {email} is queued (alertd run sends it); "
            "the alert mails nothing until its link is followed"
        )
    return 0


def _cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from alertd.addresses import normalise_email
    from alertd.listing import list_alerts_of_database

    if args.email is not None:
        normalise_email(args.email)  # a bad address opens no database
    rows = list_alerts_of_database(settings.database, args.email)
    for row in rows:
        fields = (row.id, row.email, row.frequency, row.status.listed, row.notify_on, row.query)
        print("\t".join(str(field) for field in fields))
    if not rows:
        print("no alerts", file=sys.stderr)
    return 0


def _cmd_unsubscribe(args: argparse.Namespace, settings: Settings) -> int:
    from alertd.subscriptions import lifecycle

    alert = lifecycle.stop_alert(_database(settings), args.alert_id, utc_now())
    print(f"alert {alert.id} stopped")
    return 0


# A century: more than any history alertd holds, and far from datetime's limits.
MAX_DAYS = 36_500


def _check_days(days: int) -> None:
    from alertd.errors import UsageError

    if not 1 <= days <= MAX_DAYS:
        raise UsageError(f"--days must be between 1 and {MAX_DAYS}")


def _cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    from collections import Counter
    from datetime import timedelta

    from alertd import queries

    _check_days(args.days)
    since = (utc_now() - timedelta(days=args.days)).date()
    found = queries.matching_lines(_database(settings), args.query, since)
    for line in found:
        print(f"{line.day}\t{line.where}\t{line.title}\t{line.url}")
    weeks = Counter(line.day - timedelta(days=line.day.weekday()) for line in found if line.day)
    for week, count in sorted(weeks.items()):
        print(f"week of {week}: {count}", file=sys.stderr)
    matches = "1 match" if len(found) == 1 else f"{len(found)} matches"
    print(f"{matches} in the last {args.days} days", file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from alertd.daemon import run_daemon, run_one_pass

    if args.once:
        report = asyncio.run(run_one_pass(settings))
        return EXIT_FAILED if report.errors else 0
    asyncio.run(run_daemon(settings))
    return 0


def _cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    _database(settings)
    print("database is up to date", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from alertd.status import collect_status, format_status

    status = collect_status(_database(settings), settings, now=utc_now())
    if args.json:
        print(json.dumps(status.as_json(), indent=2))
    else:
        print(format_status(status))
    return EXIT_FAILED if status.problems else 0


def _cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from alertd.backfill import backfill
    from alertd.errors import UsageError
    from alertd.progress import backfill_progress

    today = utc_now().astimezone(settings.digest.zone).date()
    last = args.last or today
    if args.first > last:
        raise UsageError(f"--from {args.first} is after --to {last}")
    engine = _database(settings)
    with backfill_progress() as progress:
        stored = asyncio.run(
            backfill(
                engine,
                settings,
                args.first,
                last,
                now=utc_now(),
                today=today,
                progress=progress,
                retry_base_s=settings.parliament.retry_base_s,
            )
        )
    print(f"backfill done: {stored} stored, none alerted", file=sys.stderr)
    return 0


def _cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from alertd.web import run_web

    return asyncio.run(run_web(settings))


def _cmd_render_sample(args: argparse.Namespace, settings: Settings) -> int:
    import os
    from pathlib import Path

    from alertd.addresses import normalise_email
    from alertd.digests.render import build_environment
    from alertd.digests.sample import write_sample
    from alertd.errors import UsageError

    _check_days(args.days)
    normalise_email(args.email)
    out = Path(args.out).expanduser()
    # A folder (existing, or typed with a trailing slash) gets the files inside it.
    if out.is_dir() or args.out.endswith(("/", os.sep)):
        out = out / "digest-sample"
    if not out.parent.is_dir():
        raise UsageError(f"--out: the folder {out.parent} does not exist")
    env = build_environment(settings)
    try:
        files = write_sample(
            _database(settings), settings, env, args.email, out, now=utc_now(), days=args.days
        )
    except OSError as exc:
        raise UsageError(f"--out: cannot write {exc.filename}: {exc.strerror}") from None
    print(files.eml)
    print(files.html)
    print(f"subject: {files.subject} (not sent)", file=sys.stderr)
    return 0


def _cmd_feeds(args: argparse.Namespace, settings: Settings) -> int:
    from alertd.redact import redact
    from alertd.sources.feed_registry import add_feed, list_feeds, remove_feed

    engine = _database(settings)
    if args.feed_action == "add":
        feed = add_feed(engine, args.name, args.url, args.interval)
        print(redact(f"feed {feed.name!r} added: {feed.url}"))
    elif args.feed_action == "remove":
        remove_feed(engine, args.name)
        print(f"feed {args.name!r} removed")
    else:
        for feed, poll in list_feeds(engine):
            state = (
                "enabled" if feed.enabled else f"disabled ({feed.disabled_reason or feed.state})"
            )
            last_poll = poll.last_poll_at if poll else None
            polled = f"{last_poll:%Y-%m-%d %H:%M}Z" if last_poll else "never"
            error = f"\terror: {poll.last_error}" if poll and poll.last_error else ""
            line = f"{feed.name}\t{feed.url}\t{state}\tlast poll {polled}{error}"
            print(redact(line))
    return 0


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from collections.abc import Iterator
    from pathlib import Path

    from alertd.errors import UsageError
    from alertd.files import write_private
    from alertd.transfer import export_lines

    engine = _database(settings)
    if args.out is None:
        for line in export_lines(engine, utc_now()):
            sys.stdout.write(line + "\n")
        return 0
    target = Path(args.out)
    if not target.parent.is_dir():
        raise UsageError(f"--out {args.out}: no such folder {str(target.parent)!r}")
    if target.is_dir():
        raise UsageError(f"--out {args.out}: is a folder; give a file name")
    # Written beside the target and renamed: a failed export never leaves half a backup
    # under the backup's name. 0600, a new file: it holds every subscriber's address.
    lines = 0

    def counted() -> Iterator[bytes]:
        nonlocal lines
        for line in export_lines(engine, utc_now()):
            lines += 1
            yield (line + "\n").encode()

    try:
        write_private(target, counted())
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write: {exc.strerror}") from None
    print(f"exported {lines - 1} subscribers to {target}", file=sys.stderr)
    return 0


def _cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    import shutil
    import tempfile

    from alertd.errors import UsageError
    from alertd.transfer import check_lines, import_lines

    try:
        if args.file == "-":
            # Read twice (check, then write): stdin is spooled to a private temporary file.
            source = tempfile.TemporaryFile("w+", encoding="utf-8")
            shutil.copyfileobj(sys.stdin, source)
            source.seek(0)
        else:
            source = open(args.file, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{args.file}: not UTF-8 text") from None
    with source:
        try:
            # Checked before the database is opened: bad input creates nothing.
            check_lines(source)
            report = import_lines(source, _database(settings), utc_now())
        except UnicodeDecodeError:
            raise UsageError(f"{args.file}: not UTF-8 text") from None
    kept = "; ids kept from the export" if report.kept_ids else ""
    print(
        f"imported {report.subscribers_added} new subscribers and {report.alerts_added} alerts"
        f" ({report.alerts_present} already present){kept}"
    )
    return 0


# sysexits.h, as an MTA's pipe transport reads them: a data error or an unknown user
# returns the report to its sender, a temporary failure or a configuration error keeps it
# queued to try again.
EX_OK, EX_DATAERR, EX_NOUSER, EX_TEMPFAIL, EX_CONFIG = 0, 65, 67, 75, 78
# A report is a few kilobytes, and a few hundred with the whole digest it returns: a bigger
# message is no report of ours, and is refused before it is parsed (parsing takes about ten
# times its size in memory).
MAX_REPORT_BYTES = 1024 * 1024


def _cmd_bounce(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from alertd.db import describe_error
    from alertd.errors import ConfigError, DatabaseUnavailable, NotOurs, ReportUnreadable
    from alertd.mail.bounces import handle_report, read_report

    raw = sys.stdin.buffer.read(MAX_REPORT_BYTES + 1)
    if len(raw) > MAX_REPORT_BYTES:
        print(
            f"alertd bounce: a message over {MAX_REPORT_BYTES} bytes is no report of ours",
            file=sys.stderr,
        )
        return EX_DATAERR
    try:
        report = read_report(raw, args.recipient)
    except ReportUnreadable as exc:
        print(f"alertd bounce: {exc}", file=sys.stderr)
        return EX_DATAERR
    if settings.mail.verp_address is None:
        print(
            "alertd bounce: mail.verp_address is not set: no bounce names a subscriber",
            file=sys.stderr,
        )
        return EX_CONFIG
    try:
        # The database down, or any other failure to open it, is temporary too.
        outcome = handle_report(_database(settings), settings, report, utc_now())
    except (ConfigError, DatabaseUnavailable) as exc:
        print(f"alertd bounce: database error: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except NotOurs as exc:
        print(f"alertd bounce: {exc}", file=sys.stderr)
        return EX_NOUSER
    except SQLAlchemyError as exc:
        print(f"alertd bounce: database error: {describe_error(exc)}", file=sys.stderr)
        return EX_TEMPFAIL
    except Exception as exc:
        # A fault of ours: the MTA keeps the report and tries again once it is fixed, where
        # an exit code it does not know (1, a traceback) would return it to its sender.
        print(
            f"alertd bounce: internal error, kept to try again: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return EX_TEMPFAIL
    print(f"alertd bounce: {outcome}")
    return EX_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "subscribe": _cmd_subscribe,
    "list": _cmd_list,
    "unsubscribe": _cmd_unsubscribe,
    "preview": _cmd_preview,
    "run": _cmd_run,
    "db": _cmd_db,
    "status": _cmd_status,
    "backfill": _cmd_backfill,
    "feeds": _cmd_feeds,
    "render-sample": _cmd_render_sample,
    "web": _cmd_web,
    "export": _cmd_export,
    "import": _cmd_import,
    "bounce": _cmd_bounce,
}


def _database_error(exc: Exception) -> str | None:
    """One line for a database error (not SQLAlchemy's statement dump: the statement helps no
    operator), None for any other error. SQLAlchemy's errors are looked up, not imported: a
    command that never imported SQLAlchemy (`alertd list` on SQLite) cannot raise them."""
    import sqlite3

    sqlalchemy_errors = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_errors is not None and isinstance(exc, sqlalchemy_errors.SQLAlchemyError):
        from alertd.db import describe_error

        return describe_error(exc)
    if isinstance(exc, sqlite3.Error):
        return str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alertd`` command; returns the exit code."""
    args = build_parser().parse_args(argv)  # --help and usage errors exit here, cheaply
    from alertd.config import load_settings
    from alertd.errors import AlertdError, ConfigError, DatabaseUnavailable, UsageError
    from alertd.logs import setup_logging
    from alertd.redact import redact

    try:
        settings = load_settings(args.config)
        setup_logging(args.verbose, settings.log.level, settings.log.format)
        return COMMANDS[args.command](args, settings)
    except BrokenPipeError:
        # `alertd status | head -1`: the reader has what it wanted and closed the pipe. Point
        # stdout at /dev/null so that flushing it at exit does not complain again.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (UsageError, ConfigError, DatabaseUnavailable) as exc:
        # A URL's password (database.url, a feed) never reaches the terminal or a log file.
        print(f"alertd: error: {redact(str(exc))}", file=sys.stderr)
        # An unreachable database is met as a bad database.url is: exit 2, one line. An MTA
        # keeps a report it could not hand over and tries again (EX_CONFIG).
        return EX_CONFIG if args.command == "bounce" else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        # Ctrl-C: every command commits as it goes, so what was done is kept.
        resume = "; run it again to go on" if args.command == "backfill" else ""
        print(f"alertd: {args.command} interrupted: what was done is kept{resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except AlertdError as exc:
        print(f"alertd: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        message = _database_error(exc)
        if message is None:
            raise
        print(f"alertd: error: database error: {message}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        while _opened:
            _opened.pop().dispose()
