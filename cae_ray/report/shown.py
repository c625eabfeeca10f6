"""How the report shows a value: times in UTC, lists of names as chips."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

Json = dict[str, Any]
OPEN_LIST_UP_TO = 64
"""Longer feature lists start collapsed, so the page stays one screen at the top."""


def chips(*groups: tuple[list[str], str]) -> Json:
    """Names and their chip kind ("on": kept, "off": deprecated); long lists start closed."""
    names = [(str(name), kind) for group, kind in groups for name in group]
    return {"names": names, "open": len(names) <= OPEN_LIST_UP_TO}


def utc(when: int | str | None) -> str:
    """A time (nanoseconds since the epoch, or an ISO 8601 text with its zone) as the page
    shows every time: UTC, to the minute."""
    if isinstance(when, str):
        try:
            seconds = datetime.fromisoformat(when).timestamp()
        except ValueError:
            return when
    elif when:
        seconds = when / 1e9
    else:
        return ""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))
