"""The registry's export: the runs a filter selects, and their actions, as CSV, JSON or
JSONL, produced chunk by chunk (pure: the caller pages through the read model).

Every output records the filter it was made with and each run's bundle digest, so a row
can be checked against the bundle it came from:

* ``csv``: one row per run (``include=runs``) or per action (``include=actions``) with
  flat columns a spreadsheet can use; only values that are documents (an action's
  inputs, outputs and payload) are JSON text.  The filter is a column (``filter``, the
  same on every row) since CSV has no place for a header document.
* ``json``: ``{"export": {...filter, format, generated_at...}, "runs": [...],
  "count": N}``, each run with its ``actions`` when asked.
* ``jsonl``: an ``export`` line first, then one ``run`` line per run followed by its
  ``action`` lines, and a closing ``end`` line with the count (a truncated file shows).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

import orjson

from fleetledger.kernel.errors import ConfigError
from fleetledger.processors.readmodel import ActionRow, RunFilter, RunRow, iso
from fleetledger.schemas import money_str

Format = Literal["csv", "json", "jsonl"]
FORMATS: tuple[str, ...] = ("csv", "json", "jsonl")
Include = Literal["runs", "actions"]
INCLUDES: tuple[str, ...] = ("runs", "actions")
EXPORT_VERSION = "fleetledger.export/v1"

MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
}

#: Columns of a runs CSV, in order.
RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "tenant",
    "agent_id",
    "project",
    "status",
    "started_at",
    "ended_at",
    "duration_ms",
    "actions",
    "actions_ok",
    "success_rate",
    "events",
    "cost",
    "currency",
    "intercepts",
    "bundle_digest",
    "filter",
)

#: Columns of an actions CSV, in order (the run's identity and digest on every row).
ACTION_COLUMNS: tuple[str, ...] = (
    "run_id",
    "tenant",
    "agent_id",
    "run_status",
    "bundle_digest",
    "seq",
    "type",
    "name",
    "ts",
    "step_id",
    "outcome",
    "cost",
    "currency",
    "duration_ms",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "event_id",
    "error",
    "entry_hash",
    "inputs",
    "outputs",
    "payload",
    "filter",
)


def check(fmt: str, include: str) -> tuple[Format, Include]:
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if include not in INCLUDES:
        raise ConfigError(f"include {include!r}; expected one of {', '.join(INCLUDES)}")
    return fmt, include  # type: ignore[return-value]


def filter_text(f: RunFilter, sort: str) -> str:
    """The filter as one compact query-like string (the CSV's ``filter`` column)."""
    parts = [f"status={s}" for s in f.status]
    for name, value in (
        ("agent", f.agent),
        ("tenant", f.tenant),
        ("min_cost", None if f.min_cost is None else money_str(f.min_cost)),
        ("since", iso(f.since)),
        ("until", iso(f.until)),
    ):
        if value is not None:
            parts.append(f"{name}={value}")
    parts.append(f"sort={sort}")
    return "&".join(parts)


def _doc(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _cell(value: Any) -> Any:
    return "" if value is None else value


def run_record(run: RunRow) -> dict[str, Any]:
    out = run.to_json()
    out.pop("position", None)
    out["bundle_digest"] = out.pop("digest")
    return out


def action_record(action: ActionRow) -> dict[str, Any]:
    out = action.to_json()
    out.pop("position", None)
    return out


class _Csv:
    def __init__(self) -> None:
        self._buf = io.StringIO()
        self._w = csv.writer(self._buf, lineterminator="\n")

    def row(self, values: Sequence[Any]) -> None:
        self._w.writerow(values)

    def take(self) -> bytes:
        data = self._buf.getvalue().encode()
        self._buf.seek(0)
        self._buf.truncate()
        return data


def _csv_run(run: RunRow, ftext: str) -> list[Any]:
    r = run_record(run)
    return [_cell(r[c]) for c in RUN_COLUMNS[:-1]] + [ftext]


def _csv_action(run: RunRow, a: ActionRow, ftext: str) -> list[Any]:
    payload = a.event.get("payload", {})
    return [
        run.run_id,
        run.tenant,
        run.agent_id,
        run.status,
        _cell(run.digest),
        a.seq,
        a.type,
        a.name,
        iso(a.ts),
        _cell(a.step_id),
        _cell(a.outcome),
        "" if a.cost is None else money_str(a.cost),
        _cell(a.currency),
        _cell(a.duration_ms),
        _cell(a.provider),
        _cell(a.request_model),
        _cell(a.response_model),
        _cell(a.input_tokens),
        _cell(a.output_tokens),
        _cell(a.event.get("event_id")),
        _cell(a.error),
        _cell(a.entry_hash),
        _doc(a.inputs),
        _doc(a.outputs),
        _doc(payload),
        ftext,
    ]


def export_chunks(
    fmt: str,
    include: str,
    f: RunFilter,
    sort: str,
    runs: Iterable[tuple[RunRow, Sequence[ActionRow] | None]],
    generated_at: datetime,
) -> Iterator[bytes]:
    """The export's bytes, a chunk per run (``runs`` yields each run with its actions
    when ``include == "actions"``)."""
    fmt_, inc = check(fmt, include)
    header = {
        "export_version": EXPORT_VERSION,
        "format": fmt_,
        "include": inc,
        "filter": f.to_json(),
        "sort": sort,
        "generated_at": iso(generated_at),
    }
    ftext = filter_text(f, sort)
    count = 0
    if fmt_ == "csv":
        out = _Csv()
        out.row(ACTION_COLUMNS if inc == "actions" else RUN_COLUMNS)
        yield out.take()
        for run, actions in runs:
            count += 1
            if inc == "actions":
                for a in actions or ():
                    out.row(_csv_action(run, a, ftext))
            else:
                out.row(_csv_run(run, ftext))
            yield out.take()
        return
    if fmt_ == "jsonl":
        yield orjson.dumps({"kind": "export", **header}) + b"\n"
        for run, actions in runs:
            count += 1
            lines = [orjson.dumps({"kind": "run", **run_record(run)})]
            if inc == "actions":
                lines += [
                    orjson.dumps({"kind": "action", **action_record(a)}) for a in actions or ()
                ]
            yield b"\n".join(lines) + b"\n"
        yield orjson.dumps({"kind": "end", "count": count}) + b"\n"
        return
    yield b'{"export":' + orjson.dumps(header) + b',"runs":['
    for run, actions in runs:
        record = run_record(run)
        if inc == "actions":
            record["actions"] = [action_record(a) for a in actions or ()]
        yield (b"," if count else b"") + orjson.dumps(record)
        count += 1
    yield b'],"count":' + str(count).encode() + b"}\n"


def filename(fmt: str, include: str, generated_at: datetime) -> str:
    stamp = generated_at.strftime("%Y%m%dT%H%M%SZ")
    return f"fleetledger-{include}-{stamp}.{fmt}"


__all__ = [
    "ACTION_COLUMNS",
    "EXPORT_VERSION",
    "FORMATS",
    "INCLUDES",
    "MEDIA_TYPES",
    "RUN_COLUMNS",
    "action_record",
    "check",
    "export_chunks",
    "filename",
    "filter_text",
    "run_record",
]
