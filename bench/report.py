"""``results.json`` and ``results.md``: figures with median, min-max, N, baseline and ratio."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import Figure


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['platform']}, {m['cpu_count']} CPUs ({m['processor']}), "
        f"{m['implementation']} {m['python']}"
    )


def build(
    figures: list[Figure],
    *,
    mode: str,
    command: str,
    seconds: float,
    traffic: dict[str, Any],
    skipped: dict[str, str],
) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": mode,
        "command": command,
        "machine": machine(),
        "duration_s": round(seconds, 1),
        "traffic": traffic,
        "measurements": {f.key: f.to_json() for f in figures},
        "skipped": skipped,
    }


def _num(x: float, unit: str) -> str:
    if unit == "events/s" or abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _range(s: dict[str, Any], unit: str) -> str:
    return f"{_num(s['min'], unit)}-{_num(s['max'], unit)}"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Measured {results['date']} on {machine_line(m)}; `{results['command']}` "
        f"({results['mode']} sizes, {results['duration_s']:.0f} s).",
        "",
        "| Measurement | Median | Min-max | N | Baseline (same run, same data) | Baseline median "
        "| Ratio (median, min-max) | Target | Met |",
        "|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for f in results["measurements"].values():
        unit = f["unit"]
        base = f.get("baseline")
        ratio = f.get("ratio")
        met = f.get("met")
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{f['title']} [{unit}]",
                    _num(f["median"], unit),
                    _range(f, unit),
                    str(f["n"]),
                    base["name"] if base else "-",
                    _num(base["median"], unit) if base else "-",
                    f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})"
                    if ratio
                    else "-",
                    f.get("target") or "-",
                    "-" if met is None else ("yes" if met else "**no**"),
                ]
            )
            + " |"
        )
    notes = [(k, f["notes"]) for k, f in results["measurements"].items() if f.get("notes")]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- `{k}`: {n}" for k, n in notes]
    if results["traffic"]:
        lines += ["", "Traffic (fleet simulator, per repetition):", ""]
        for name, t in results["traffic"].items():
            lines.append(
                f"- {name}: {t['runs']} runs, {t['events']:,} events in {t['messages']:,} "
                f"messages ({t['events_per_message']} events/message, "
                f"{t['mean_message_bytes']:,} bytes/message)"
            )
    if results["skipped"]:
        lines += ["", "Not measured:", ""]
        lines += [f"- {k}: {why}" for k, why in results["skipped"].items()]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "results.json"
    md = out_dir / "results.md"
    js.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    md.write_text(markdown(results), encoding="utf-8")
    return js, md
