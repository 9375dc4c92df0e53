"""The run page's tabs and the console's keyboard shortcuts, declared once.

A tab is a template under ``templates/tabs/`` rendered with the run's
:class:`~fleetledger.processors.rundetail.RunDetail`; its ``key`` is its keyboard
shortcut (the page's script reads every tab's key from the page, so a tab added here
gets its shortcut with it).  The replay issue adds ``simulation`` (``s``) and
``determinism`` (``d``) here, and ``r`` to :data:`SHORTCUTS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tab:
    id: str
    title: str
    key: str
    template: str


TABS: tuple[Tab, ...] = (Tab("telemetry", "Telemetry", "t", "tabs/telemetry.html"),)


@dataclass(frozen=True)
class Shortcut:
    key: str
    what: str


#: Every shortcut, as the help overlay lists them (tab keys come from :data:`TABS`).
SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("/", "focus search"),
    *(Shortcut(t.key, f"{t.title} tab") for t in TABS),
    Shortcut("Esc", "close the inspector, leave a field"),
    Shortcut("?", "show these shortcuts"),
)

__all__ = ["SHORTCUTS", "TABS", "Shortcut", "Tab"]
