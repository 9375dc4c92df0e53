"""bench.report: a later partial run's figures spliced into the full results say so."""

from __future__ import annotations

from typing import Any

from bench.report import markdown, readme_section, splice


def _results(date: str, keys: list[str], value: float, load: float) -> dict[str, Any]:
    return {
        "date": date,
        "mode": "full",
        "command": "python -m bench",
        "machine": {
            "platform": "Linux",
            "cpu_count": 2,
            "processor": "x86_64",
            "implementation": "CPython",
            "python": "3.11.7",
        },
        "duration_s": 10.0,
        "load": {"median": load, "min": load, "max": load, "n": 1},
        "traffic": {},
        "measurements": {
            k: {"title": k, "unit": "events/s", "median": value, "min": value, "max": value, "n": 3}
            for k in keys
        },
        "skipped": {},
    }


def test_splice_replaces_the_rerun_figures_and_names_when_and_under_what_load() -> None:
    full = _results("2026-12-01T10:00:00Z", ["canonical.events", "embedded.process"], 1.0, 8.4)
    part = _results("2026-12-01T20:00:00Z", ["embedded.process"], 2.0, 2.5)
    out = splice(full, part, "python -m bench --only embedded")
    assert out["measurements"]["embedded.process"]["median"] == 2.0
    assert out["measurements"]["canonical.events"]["median"] == 1.0
    assert out["reruns"] == [
        {
            "keys": ["embedded.process"],
            "date": "2026-12-01T20:00:00Z",
            "command": "python -m bench --only embedded",
            "load": part["load"],
        }
    ]
    for text in (markdown(out), readme_section(out)):
        assert "The embedded rows were re-measured on 2026-12-01T20:00:00Z" in text
        assert "`python -m bench --only embedded`, load average median 2.5" in text
    # a second splice of the same rows replaces the record instead of adding one
    again = splice(out, part, "python -m bench --only embedded")
    assert len(again["reruns"]) == 1
