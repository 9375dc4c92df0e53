"""What a model call cost: prices from ``genai-prices``, the user's overrides first.

A ``model_io`` recorded without a cost is priced here, in :class:`~decimal.Decimal`:

1. **Overrides** - a versioned file of the user's own (negotiated) prices, the same JSON
   format the SDK's hand-made table used to have (``version``, ``currency``,
   ``models: [{provider, model, input, output, cache_read?, cache_write?, aliases?}]``,
   per one million tokens).  A row matches its ``model``, any of its ``aliases``, and the
   dated names of either (``gpt-4o-2024-08-06`` matches ``gpt-4o``).
2. **genai-prices** (pydantic's price database): dated names and aliases, cache read and
   write prices, prices as of the request time, per-request prices.
3. Neither knows the model: the cost is recorded as **unpriced** (amount 0, source
   ``unpriced``), the tokens are kept, and the processors count the call apart and raise an
   ``unpriced_model`` warning.  An unknown model never raises.

The served model (``response_model``) is looked up before the requested one.  Every
calculated cost says where its prices came from: ``Cost.price_data`` is
``genai-prices@<package version>`` or ``overrides@<file version>``, ``Cost.priced_model``
the model whose prices were applied.

Token counts follow the OpenTelemetry GenAI conventions: ``input_tokens`` include the
cache-read and cache-write tokens, which are billed at their own prices instead of the
input price (at the input price when the model has none).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fleetledger.kernel.errors import ConfigError, EventValidationError
from fleetledger.schemas import Cost, CostSource

log = logging.getLogger(__name__)

__all__ = [
    "LIBRARY",
    "ModelPrice",
    "PriceOverrides",
    "Pricer",
    "TokenUsage",
    "library_version",
    "load_price_overrides",
    "parse_price_overrides",
    "unpriced_cost",
]

#: Name of the price library in ``Cost.price_data``.
LIBRARY = "genai-prices"

_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1_000)
_SCALE = Decimal("1e-10")  # Avro decimal scale of amounts
_DATED = re.compile(r"^(?P<base>.+?)(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8}))$")
_TOP_KEYS = {"version", "currency", "unit", "models", "effective_from", "note"}
_ROW_KEYS = {"provider", "model", "input", "output", "cache_read", "cache_write", "aliases"}
# Prices of a genai-prices model that the fast path below understands.  Anything else
# (tiered prices, per-character prices...) is left to the library's own calculation.
_SIMPLE_KEYS = frozenset(
    {
        "input_mtok",
        "output_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "cache_write_1h_mtok",
        "web_searches_kcount",
        "storage_searches_kcount",
        "requests_kcount",
        # prices of audio, image and video tokens, which recorded calls never report
        # separately (so they add nothing; the whole-database test holds this too)
        "input_audio_mtok",
        "cache_audio_read_mtok",
        "output_audio_mtok",
        "input_image_mtok",
        "cache_image_read_mtok",
        "output_image_mtok",
        "input_video_mtok",
        "output_video_mtok",
    }
)
# OpenTelemetry ``gen_ai.provider.name`` values genai-prices does not resolve by itself.
_PROVIDER_IDS = {
    "gcp.gen_ai": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "x_ai": "x-ai",
    "azure.ai.inference": "azure",
    "mistral_ai": "mistral",
}


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of one call; ``input_tokens`` include the cache reads and writes."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def check(self) -> None:
        """Raise :class:`EventValidationError` for counts that cannot be (a caller's mistake)."""
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise EventValidationError(
                    f"{name}: found {value!r}, expected a non-negative integer"
                )
        cached = self.cache_read_tokens + self.cache_write_tokens
        if cached > self.input_tokens:
            raise EventValidationError(
                f"cache_read_tokens + cache_write_tokens: found {cached}, expected at most "
                f"input_tokens ({self.input_tokens}): input tokens include the cached ones"
            )


@dataclass(frozen=True)
class ModelPrice:
    """Override prices of one model, in the file's currency per one million tokens."""

    provider: str
    model: str
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    aliases: tuple[str, ...] = ()

    def amount(self, usage: TokenUsage) -> Decimal:
        uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        return (
            uncached * self.input
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
            + usage.output_tokens * self.output
        ) / _MILLION


@dataclass(frozen=True)
class PriceOverrides:
    """One version of a user's price file; rows are looked up by (provider, model name)."""

    version: str
    currency: str
    prices: Mapping[tuple[str, str], ModelPrice]
    _names: dict[tuple[str, str], ModelPrice] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for price in self.prices.values():
            for name in (price.model, *price.aliases):
                self._names[(price.provider, name.lower())] = price

    def __iter__(self) -> Iterator[ModelPrice]:
        return iter(self.prices.values())

    def __len__(self) -> int:
        return len(self.prices)

    def find(self, provider: str, model: str) -> ModelPrice | None:
        """The row for ``model`` (or its undated name), else None."""
        key = model.lower()
        found = self._names.get((provider, key))
        if found is None:
            m = _DATED.match(key)
            if m is not None:
                found = self._names.get((provider, m.group("base")))
        return found


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


def parse_price_overrides(
    data: Mapping[str, Any], *, origin: str = "price overrides"
) -> PriceOverrides:
    """Validate the JSON form of a price file."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: found {type(data).__name__}, expected a JSON object")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{origin}: found unknown keys {unknown}, expected only {sorted(_TOP_KEYS)}"
        )
    try:
        version = data["version"]
        currency = data["currency"]
        rows = data["models"]
    except KeyError as exc:
        raise ConfigError(
            f"{origin}: found no {exc} key, expected version, currency and models"
        ) from exc
    if not isinstance(version, str) or not version:
        raise ConfigError(f"{origin}: version found {version!r}, expected a non-empty string")
    unit = data.get("unit", "per_million_tokens")
    if unit != "per_million_tokens":
        raise ConfigError(f"{origin}: unit found {unit!r}, expected 'per_million_tokens'")
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()) or (
        not currency.isupper()
    ):
        raise ConfigError(f"{origin}: currency found {currency!r}, expected an ISO 4217 code")
    if not isinstance(rows, list):
        raise ConfigError(f"{origin}: models found {type(rows).__name__}, expected a list")
    prices: dict[tuple[str, str], ModelPrice] = {}
    for i, row in enumerate(rows):
        where = f"{origin} models[{i}]"
        if not isinstance(row, Mapping):
            raise ConfigError(f"{where}: found {row!r}, expected an object")
        extra = sorted(set(row) - _ROW_KEYS)
        if extra:
            raise ConfigError(f"{where}: found unknown keys {extra}, expected {sorted(_ROW_KEYS)}")
        try:
            provider, model = row["provider"], row["model"]
            base = _decimal(row["input"], f"{where}.input")
            output = _decimal(row["output"], f"{where}.output")
        except KeyError as exc:
            raise ConfigError(
                f"{where}: found no {exc} key, expected provider, model, input and output"
            ) from exc
        if not (isinstance(provider, str) and provider and isinstance(model, str) and model):
            raise ConfigError(f"{where}: provider and model must be non-empty strings")
        aliases = row.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise ConfigError(f"{where}.aliases: found {aliases!r}, expected a list of names")
        price = ModelPrice(
            provider=provider,
            model=model,
            input=base,
            output=output,
            cache_read=_decimal(row.get("cache_read", row["input"]), f"{where}.cache_read"),
            cache_write=_decimal(row.get("cache_write", row["input"]), f"{where}.cache_write"),
            aliases=tuple(aliases),
        )
        if (provider, model) in prices:
            raise ConfigError(f"{where}: found {provider}/{model} twice, expected it once")
        prices[(provider, model)] = price
    return PriceOverrides(version=version, currency=currency, prices=prices)


def load_price_overrides(path: Path | str) -> PriceOverrides:
    """Read a price file (see :func:`parse_price_overrides`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"price overrides {str(path)!r}: cannot read it: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"price overrides {str(path)!r}: not JSON: {exc}") from exc
    return parse_price_overrides(data, origin=f"price overrides {str(path)!r}")


def library_version() -> str:
    """``genai-prices@<version>``: the price data a library-priced cost came from."""
    from importlib.metadata import version

    return f"{LIBRARY}@{version('genai-prices')}"


def unpriced_cost(currency: str = "USD") -> Cost:
    """The cost of a call nobody has a price for: amount 0, source ``unpriced``."""
    return Cost(amount=Decimal(0), currency=currency, source=CostSource.UNPRICED)


class Pricer:
    """Prices model calls: overrides first, then genai-prices, else unpriced.

    ``library=False`` prices from the overrides only.  Lookups are cached; a pricer is
    safe to share between runs of one recorder.
    """

    def __init__(self, overrides: PriceOverrides | None = None, *, library: bool = True) -> None:
        self.overrides = overrides
        self.library = library
        self._snapshot: Any = None
        self._library_data: str | None = None
        self._models: dict[tuple[str, str], Any] = {}

    @property
    def library_data(self) -> str:
        if self._library_data is None:
            self._library_data = library_version()
        return self._library_data

    def cost(
        self,
        provider: str,
        model: str,
        usage: TokenUsage,
        *,
        at: datetime | None = None,
        response_model: str | None = None,
    ) -> Cost:
        """The cost of one call (``at``: when it was requested; prices in force then).

        Raises :class:`EventValidationError` only for impossible token counts.
        """
        usage.check()
        names = [n for n in (response_model, model) if n]
        if self.overrides is not None:
            for name in names:
                row = self.overrides.find(provider, name)
                if row is not None:
                    return Cost(
                        amount=row.amount(usage).quantize(_SCALE, ROUND_HALF_EVEN),
                        currency=self.overrides.currency,
                        source=CostSource.LOCAL,
                        price_data=f"overrides@{self.overrides.version}",
                        priced_model=row.model,
                    )
        if self.library:
            when = at if at is not None else datetime.now(UTC)
            for name in names:
                try:
                    priced = self._library_cost(provider, name, usage, when)
                except Exception as exc:  # the library must never fail a recording
                    log.warning("genai-prices could not price %s/%s: %s", provider, name, exc)
                    priced = None
                if priced is not None:
                    return priced
        return unpriced_cost(self.overrides.currency if self.overrides else "USD")

    # -- genai-prices

    def _model(self, provider: str, name: str) -> Any:
        key = (provider, name)
        if key in self._models:
            return self._models[key]
        if self._snapshot is None:
            from genai_prices import data_snapshot

            self._snapshot = data_snapshot.get_snapshot()
        pid = _PROVIDER_IDS.get(provider, provider)
        try:
            found = self._snapshot.find_provider_model(name, None, pid, None)
        except LookupError:
            found = None
        if len(self._models) < 4096:
            self._models[key] = found
        return found

    def _library_cost(
        self, provider: str, name: str, usage: TokenUsage, when: datetime
    ) -> Cost | None:
        found = self._model(provider, name)
        if found is None:
            return None
        gp_provider, info = found
        prices = info.get_prices(when)
        amount = _simple_amount(prices, usage)
        if amount is None:  # tiered or unusual prices: the library's own calculation
            from genai_prices import Usage

            calc = info.calc_price(
                Usage(
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_read_tokens=usage.cache_read_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                ),
                gp_provider,
                genai_request_timestamp=when,
            )
            amount = calc.total_price
        return Cost(
            amount=amount.quantize(_SCALE, ROUND_HALF_EVEN),
            currency="USD",
            source=CostSource.LOCAL,
            price_data=self.library_data,
            priced_model=info.id,
        )


def _simple_amount(prices: Any, usage: TokenUsage) -> Decimal | None:
    """genai-prices' result for per-token (and per-request) prices, without its general
    machinery, which costs about 0.4 ms a call.

    Equal to ``ModelPrice.calc_price`` for token-only usage (a test holds the two equal
    over the whole price database); None when the prices are not of that kind.
    """
    values: dict[str, Decimal] = {}
    for key, value in prices.__dict__.items():
        if value is None:
            continue
        if key not in _SIMPLE_KEYS:
            return None
        if not isinstance(value, Decimal):
            tiers = getattr(value, "tiers", None)
            base = getattr(value, "base", None)
            if not isinstance(base, Decimal) or not isinstance(tiers, list):
                return None
            # threshold ("cliff") tiers: the highest tier the input tokens exceed applies
            # to all units of the call
            for tier in sorted(tiers, key=lambda t: t.start, reverse=True):
                if usage.input_tokens > tier.start:
                    base = tier.price
                    break
            value = base
        values[key] = value
    base = values.get("input_mtok", Decimal(0))
    read = values.get("cache_read_mtok", base)
    write = values.get("cache_write_mtok", base)
    uncached = usage.input_tokens
    total = Decimal(0)
    if usage.cache_read_tokens:
        total += usage.cache_read_tokens * read / _MILLION
        uncached -= usage.cache_read_tokens
    if usage.cache_write_tokens:
        total += usage.cache_write_tokens * write / _MILLION
        uncached -= usage.cache_write_tokens
    total += uncached * base / _MILLION
    total += usage.output_tokens * values.get("output_mtok", Decimal(0)) / _MILLION
    if "requests_kcount" in values:
        total += values["requests_kcount"] / _THOUSAND
    return total
