"""Poll state of every source, in SourceState: who holds a poll (lease), how polls went."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from alertd.db import transaction
from alertd.errors import AlertdError
from alertd.models import SourceState

log = logging.getLogger("alertd.sources.state")


@dataclass(frozen=True)
class PollLease:
    """Who polls: ``owner`` holds a source for ``lease_s``; nobody repolls within ``min_gap``."""

    owner: str
    lease_s: float
    min_gap: timedelta


def take_poll_lease(
    engine: Engine, source: str, lease: PollLease, *, now: datetime
) -> date | None | Literal[False]:
    """Take the source for this worker; False when another holds it or it was just polled.

    Returns the source's high-water mark (None before its first good poll).
    """
    wall = datetime.now(UTC)
    try:
        with transaction(engine) as session:
            state = session.exec(
                select(SourceState)
                .where(SourceState.name == source)
                .with_for_update(skip_locked=True)
            ).first()
            if state is None:
                if session.get(SourceState, source) is not None:
                    return False  # locked by another worker right now
                state = SourceState(name=source)
            held = state.lease_until is not None and state.lease_until > wall
            recent = state.last_ok_at is not None and now - state.last_ok_at < lease.min_gap
            if (held and state.lease_owner != lease.owner) or recent:
                return False
            state.lease_owner = lease.owner
            state.lease_until = wall + timedelta(seconds=lease.lease_s)
            session.add(state)
            return state.high_water
    except IntegrityError:
        return False  # another worker created the row first


def record_poll(
    engine: Engine,
    source: str,
    *,
    now: datetime,
    error: str | None = None,
    high_water: date | None = None,
    new_count: int = 0,
) -> None:
    """Record a poll's outcome and free the source's lease."""
    with transaction(engine) as session:
        state = session.get(SourceState, source) or SourceState(name=source)
        state.last_poll_at = now
        state.last_error = error
        state.lease_owner, state.lease_until = None, None
        if error is None:
            state.last_ok_at = now
            state.last_new_count = new_count
            if high_water is not None:
                state.high_water = max(high_water, state.high_water or high_water)
        session.add(state)


def renew_poll_lease(engine: Engine, source: str, lease: PollLease) -> None:
    """Hold the source another ``lease_s`` from now, while this worker still holds it."""
    with transaction(engine) as session:
        state = session.get(SourceState, source)
        if state is not None and state.lease_owner == lease.owner:
            state.lease_until = datetime.now(UTC) + timedelta(seconds=lease.lease_s)
            session.add(state)


async def _keep_renewing(engine: Engine, source: str, lease: PollLease) -> None:
    # A poll may outlast its lease (hundreds of pages, a slow API, a loaded machine): renewed
    # three times a lease, it stays held however long it runs, and a worker that dies stops
    # renewing, so another takes the source within one lease.
    while True:
        await asyncio.sleep(lease.lease_s / 3)
        await asyncio.to_thread(renew_poll_lease, engine, source, lease)


def release_poll_lease(engine: Engine, source: str, owner: str) -> None:
    """Free the source after an abandoned poll (a stop), recording nothing: the next poll,
    here or on another worker, need not wait for the lease to run out."""
    with transaction(engine) as session:
        state = session.get(SourceState, source)
        if state is not None and state.lease_owner == owner:
            state.lease_owner, state.lease_until = None, None
            session.add(state)


def source_states(engine: Engine, names: list[str]) -> dict[str, SourceState]:
    """The poll state of these sources, by name (a source never polled has none)."""
    with Session(engine) as session:
        rows = session.exec(select(SourceState).where(col(SourceState.name).in_(names))).all()
    return {row.name: row for row in rows}


@dataclass
class Held:
    """A source's lease, held for one poll: its high-water mark before the poll, and what
    the poll sets on success (how many new items, and the new mark, if any)."""

    high_water: date | None
    new_count: int = 0
    new_high_water: date | None = None


@asynccontextmanager
async def holding(
    engine: Engine, source: str, lease: PollLease, *, now: datetime
) -> AsyncIterator[Held | None]:
    """Hold the source for one poll, or yield None when another worker holds it or it was
    polled lately (nothing is recorded then).

    On success the poll is recorded with what ``Held`` says; a failure (an AlertdError) is
    recorded and re-raised; an abandoned poll (cancelled) frees the lease, recording
    nothing, so the next poll, here or on another worker, need not wait for it to expire.
    """
    high_water = await asyncio.to_thread(take_poll_lease, engine, source, lease, now=now)
    if high_water is False:
        # Routine when several workers share the poll job; news when asked for a poll.
        on_demand = lease.min_gap == timedelta(0)
        log.log(
            logging.INFO if on_demand else logging.DEBUG,
            "%s: %s; skipped",
            source,
            "another worker is polling it" if on_demand else "polled recently or being polled",
        )
        yield None
        return
    held = Held(high_water)
    renewing = asyncio.create_task(_keep_renewing(engine, source, lease))
    try:
        yield held
    except AlertdError as exc:
        await asyncio.to_thread(record_poll, engine, source, now=now, error=str(exc))
        raise
    except asyncio.CancelledError:
        await asyncio.to_thread(release_poll_lease, engine, source, lease.owner)
        raise
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
    await asyncio.to_thread(
        record_poll,
        engine,
        source,
        now=now,
        high_water=held.new_high_water,
        new_count=held.new_count,
    )
