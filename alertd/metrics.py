"""Prometheus metrics: polls, items ingested, matches, digests by outcome, SMTP latency."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

if TYPE_CHECKING:
    from alertd.pipeline import RunReport


class Metrics:
    """One registry per process (not the global default), so tests and workers stay apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter(
            "alertd_polls",
            "Source polls by outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.items = Counter(
            "alertd_items_ingested",
            "New items stored (answer versions, tabled questions, statements, feed items).",
            ["source"],
            registry=self.registry,
        )
        self.matches = Counter("alertd_matches", "Alert hits recorded.", registry=self.registry)
        self.digests = Counter(
            "alertd_digests", "Digests by outcome.", ["outcome"], registry=self.registry
        )
        self.stage_failures = Counter(
            "alertd_stage_failures",
            "Pipeline stages (poll, match, compose, drain) that failed; later stages still ran.",
            ["stage"],
            registry=self.registry,
        )
        self.smtp_seconds = Histogram(
            "alertd_send_seconds",
            "Time to hand one digest to the mail server.",
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "alertd_run_seconds",
            "Duration of one pipeline run.",
            registry=self.registry,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
        )

    def record_run(self, report: RunReport, duration_s: float) -> None:
        for source, ok in report.polls.items():
            self.polls.labels(source, "ok" if ok else "error").inc()
        for source, count in report.new_items_by_source.items():
            self.items.labels(source).inc(count)
        self.matches.inc(report.hits)
        self.digests.labels("queued").inc(report.digests_queued)
        self.digests.labels("sent").inc(report.sent)
        self.digests.labels("retried").inc(report.deferred)
        self.digests.labels("dead").inc(report.rejected)
        for stage in report.failed_stages:
            self.stage_failures.labels(stage).inc()
        self.run_seconds.observe(duration_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
