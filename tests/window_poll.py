"""One poll of one API kind alone, through its own HTTP client, as the pipeline builds it."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from alertd.config import Settings
from alertd.kinds.kind import ApiKind
from alertd.sources.parliament import ParliamentApi, make_http_client
from alertd.sources.source import PollResult
from alertd.sources.state import PollLease
from alertd.sources.window import WindowSource


async def poll_kind(
    engine: Engine,
    kind: ApiKind,
    settings: Settings,
    now: datetime,
    *,
    lookback_days: int = 0,
    lease: PollLease | None = None,
) -> PollResult:
    async with make_http_client(settings.parliament) as client:
        source = WindowSource(
            engine,
            ParliamentApi(settings.parliament, client, kind.api, kind.api.base_url(settings)),
            kind,
            settings,
            zone=ZoneInfo("Europe/London"),
            lookback_days=lookback_days,
            lease=lease or PollLease("test", 60.0, timedelta(0)),
        )
        return await source.poll(now)
