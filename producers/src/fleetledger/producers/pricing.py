"""Versioned model price tables (``producers/prices/<version>.json``).

A table is named by the month it takes effect (``2026-11``) and never edited once
published: a price change is a new file, so a recorded ``local`` cost can always be
recomputed from the version it was computed with.  Prices are per one million tokens,
as decimal strings.  ``input_tokens`` include the cache-read tokens, which are billed at
the ``cache_read`` price instead of the ``input`` price.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from fleetledger.kernel.errors import ConfigError, EventValidationError

__all__ = [
    "CURRENT_PRICE_TABLE",
    "ModelPrice",
    "PriceTable",
    "available_price_tables",
    "load_price_table",
]

#: Version of the newest table shipped with the SDK.
CURRENT_PRICE_TABLE = "2026-11"

_MILLION = Decimal(1_000_000)
_SCALE = Decimal("1e-10")
_TIERS = ("small", "medium", "large")


@dataclass(frozen=True)
class ModelPrice:
    """Prices of one model, in the table's currency per one million tokens."""

    provider: str
    model: str
    input: Decimal
    output: Decimal
    cache_read: Decimal
    tier: str = "medium"
    snapshot: str | None = None


@dataclass(frozen=True)
class PriceTable:
    """One version of the price list."""

    version: str
    currency: str
    prices: Mapping[tuple[str, str], ModelPrice]

    def __iter__(self) -> Iterator[ModelPrice]:
        return iter(self.prices.values())

    def __contains__(self, item: object) -> bool:
        return item in self.prices

    def price(self, provider: str, model: str) -> ModelPrice:
        try:
            return self.prices[(provider, model)]
        except KeyError:
            raise EventValidationError(
                f"model price: found {provider}/{model}, expected a model of price table "
                f"{self.version} ({len(self.prices)} models)"
            ) from None

    def cost_amount(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
    ) -> Decimal:
        """Cost of one call: uncached input, cache reads and output at their prices."""
        for name, value in (
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
            ("cache_read_tokens", cache_read_tokens),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise EventValidationError(
                    f"{name}: found {value!r}, expected a non-negative integer"
                )
        if cache_read_tokens > input_tokens:
            raise EventValidationError(
                f"cache_read_tokens: found {cache_read_tokens}, expected at most input_tokens "
                f"({input_tokens}): input tokens include the cache reads"
            )
        p = self.price(provider, model)
        total = (
            (input_tokens - cache_read_tokens) * p.input
            + cache_read_tokens * p.cache_read
            + output_tokens * p.output
        ) / _MILLION
        return total.quantize(_SCALE)

    def cost(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        source: str = "local",
    ) -> Any:
        """A :class:`fleetledger.schemas.Cost` for one call (source ``local`` by default)."""
        from fleetledger.schemas import Cost, CostSource

        amount = self.cost_amount(
            provider,
            model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
        )
        return Cost(amount=amount, currency=self.currency, source=CostSource(source))

    def models(self, *, tier: str | None = None) -> list[ModelPrice]:
        return [p for p in self.prices.values() if tier is None or p.tier == tier]


def _decimal(value: Any, where: str) -> Decimal:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: found {value!r}, expected a decimal string")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise ConfigError(f"{where}: found {value!r}, expected a decimal string") from None
    if not d.is_finite() or d < 0:
        raise ConfigError(f"{where}: found {value!r}, expected a finite non-negative price")
    return d


def parse_price_table(data: Mapping[str, Any], *, origin: str = "price table") -> PriceTable:
    """Validate the JSON form of a table."""
    try:
        version = str(data["version"])
        currency = str(data["currency"])
        unit = data.get("unit", "per_million_tokens")
        rows = data["models"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"{origin}: found no {exc} key, expected version, currency and models"
        ) from exc
    if unit != "per_million_tokens":
        raise ConfigError(f"{origin}: unit found {unit!r}, expected 'per_million_tokens'")
    if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
        raise ConfigError(f"{origin}: currency found {currency!r}, expected an ISO 4217 code")
    prices: dict[tuple[str, str], ModelPrice] = {}
    for i, row in enumerate(rows):
        where = f"{origin} models[{i}]"
        try:
            provider, model = str(row["provider"]), str(row["model"])
            price = ModelPrice(
                provider=provider,
                model=model,
                input=_decimal(row["input"], f"{where}.input"),
                output=_decimal(row["output"], f"{where}.output"),
                cache_read=_decimal(row.get("cache_read", row["input"]), f"{where}.cache_read"),
                tier=str(row.get("tier", "medium")),
                snapshot=row.get("snapshot"),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"{where}: found no {exc} key, expected provider, model, input and output"
            ) from exc
        if price.tier not in _TIERS:
            raise ConfigError(f"{where}.tier: found {price.tier!r}, expected one of {_TIERS}")
        if (provider, model) in prices:
            raise ConfigError(f"{where}: found {provider}/{model} twice, expected it once")
        prices[(provider, model)] = price
    return PriceTable(version=version, currency=currency, prices=prices)


def available_price_tables() -> list[str]:
    """Versions of the tables shipped with the SDK, oldest first."""
    folder = resources.files("fleetledger.producers").joinpath("prices")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_price_table(version: str | Path = CURRENT_PRICE_TABLE) -> PriceTable:
    """A shipped table by version (``"2026-11"``) or a table file by path."""
    if isinstance(version, Path) or version.endswith(".json"):
        path = Path(version)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"price table {str(path)!r}: cannot read it: {exc}") from exc
        origin = str(path)
    else:
        res = resources.files("fleetledger.producers").joinpath("prices", f"{version}.json")
        if not res.is_file():
            raise ConfigError(
                f"price table: found version {version!r}, expected one of "
                f"{', '.join(available_price_tables())}"
            )
        text = res.read_text(encoding="utf-8")
        origin = f"price table {version}"
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin}: not JSON: {exc}") from exc
    table = parse_price_table(data, origin=origin)
    if not isinstance(version, Path) and not version.endswith(".json") and table.version != version:
        raise ConfigError(f"{origin}: found version {table.version!r} inside, expected {version!r}")
    return table
