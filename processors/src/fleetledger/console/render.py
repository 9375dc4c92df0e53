"""Presentation helpers of the console's templates: escaped, syntax-highlighted JSON,
amounts, durations, times.  Everything recorded is untrusted: every string that reaches
HTML goes through :func:`markupsafe.escape` (templates autoescape the rest)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from markupsafe import Markup, escape

from fleetledger.processors.readmodel import iso
from fleetledger.schemas import money_str

#: Shown for a missing value.
NONE = "\u2013"
#: Largest JSON document rendered with highlighting (characters); larger ones are cut.
MAX_JSON_CHARS = 200_000


def json_text(value: Any) -> str:
    """Pretty JSON text (what "copy JSON" copies)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _scalar(value: Any) -> Markup:
    if value is None:
        return Markup('<span class="j-null">null</span>')
    if value is True or value is False:
        return Markup('<span class="j-bool">{}</span>').format("true" if value else "false")
    if isinstance(value, int | float | Decimal):
        return Markup('<span class="j-num">{}</span>').format(str(value))
    return Markup('<span class="j-str">{}</span>').format(orjson.dumps(str(value)).decode())


def _walk(value: Any, indent: int, out: list[Markup], budget: list[int]) -> None:
    pad = "  " * indent
    if budget[0] <= 0:
        out.append(Markup('<span class="j-cut">…</span>'))
        return
    if isinstance(value, Mapping):
        if not value:
            out.append(Markup("{}"))
            return
        out.append(Markup("{\n"))
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        for n, (k, v) in enumerate(items):
            key = orjson.dumps(str(k)).decode()
            budget[0] -= len(key)
            out.append(Markup('{}  <span class="j-key">{}</span>: ').format(pad, key))
            _walk(v, indent + 1, out, budget)
            out.append(Markup(",\n") if n < len(items) - 1 else Markup("\n"))
        out.append(Markup("{}}}").format(pad))
        return
    if isinstance(value, list | tuple):
        if not value:
            out.append(Markup("[]"))
            return
        out.append(Markup("[\n"))
        for n, v in enumerate(value):
            out.append(Markup("{}  ").format(pad))
            _walk(v, indent + 1, out, budget)
            out.append(Markup(",\n") if n < len(value) - 1 else Markup("\n"))
        out.append(Markup("{}]").format(pad))
        return
    text = _scalar(value)
    budget[0] -= len(text)
    out.append(text)


def json_html(value: Any) -> Markup:
    """``value`` as highlighted, escaped JSON (spans with ``j-*`` classes)."""
    out: list[Markup] = []
    _walk(value, 0, out, [MAX_JSON_CHARS])
    return Markup("").join(out)


def money(amount: Decimal | str | None, currency: str | None = None) -> str:
    if amount is None:
        return NONE
    value = Decimal(amount) if isinstance(amount, str) else amount
    text = money_str(value)
    return f"{text} {currency}" if currency else text


def money_map(amounts: Mapping[str, Decimal]) -> str:
    if not amounts:
        return "0"
    return ", ".join(f"{money_str(v)} {c}" for c, v in sorted(amounts.items()))


def duration(ms: int | None) -> str:
    if ms is None:
        return NONE
    if ms < 1000:
        return f"{ms} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def when(ts: datetime | None) -> str:
    if ts is None:
        return NONE
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(ts: datetime | None) -> str:
    """``12:04:05.678`` (UTC; the run's header has the date)."""
    if ts is None:
        return NONE
    return ts.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def when_iso(ts: datetime | None) -> str:
    return iso(ts) or ""


def percent(rate: Decimal | None) -> str:
    if rate is None:
        return NONE
    return f"{(rate * 100).quantize(Decimal('1'))} %"


def escape_text(value: Any) -> Markup:
    return escape(value)


__all__ = [
    "clock",
    "duration",
    "escape_text",
    "json_html",
    "json_text",
    "money",
    "money_map",
    "percent",
    "when",
    "when_iso",
]
