"""Test helper: write an alertd TOML config pointing at the stand-in API (and SMTP sink)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from smtp_server import SmtpSink
from standin_api import StandinApi

RECORDED_DAY = date(2021, 2, 1)
Value = str | int | float | bool


def _toml_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def write_config(
    tmp_path: Path,
    standin: StandinApi,
    sink: SmtpSink | None = None,
    **overrides: dict[str, Value],
) -> Path:
    """A config whose look-back reaches the recorded day (1 Feb 2021) from today."""
    sections: dict[str, dict[str, Value]] = {
        "database": {"url": f"sqlite:///{tmp_path}/alertd.db"},
        "parliament": {
            "base_url": standin.base_url,
            "lookback_days": (date.today() - RECORDED_DAY).days + 1,
            "timeout_s": 5.0,
        },
        # Members named only by id are looked up in the stand-in, never the real API.
        "members": {"base_url": standin.base_url},
        # Hansard is polled only where a test serves it (test_hansard), never the real API.
        "hansard": {"enabled": False},
        # Nor the Oral Questions and Motions API (test_oral_questions, test_early_day_motions).
        "oral_questions": {"enabled": False},
        "mail": {"maildir": f"{tmp_path}/mail", "from": "alerts@alertd.test"},
        # `alertd run` serves the web app too: any free port, so tests never collide.
        "web": {"port": 0},
    }
    if sink is not None:
        sections["mail"]["delivery"] = "smtp"
        sections["smtp"] = {"host": sink.host, "port": sink.port}
    for name, values in overrides.items():
        sections.setdefault(name, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    path = tmp_path / "alertd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
