"""Prices: genai-prices' figures in Decimal, the user's overrides first, unknown -> unpriced."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices import Usage
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import StartDateConstraint

from fleetledger.kernel.errors import ConfigError, EventValidationError
from fleetledger.producers.pricing import (
    Pricer,
    TokenUsage,
    _simple_amount,
    library_version,
    load_price_overrides,
    parse_price_overrides,
)
from fleetledger.schemas import CostSource

AT = datetime(2026, 11, 1, tzinfo=UTC)
USAGE = TokenUsage(input_tokens=12_345, output_tokens=678, cache_read_tokens=10_000)

OVERRIDES: dict[str, Any] = {
    "version": "acme-2026-11",
    "currency": "EUR",
    "unit": "per_million_tokens",
    "models": [
        {"provider": "openai", "model": "gpt-4o", "input": "2", "output": "8", "cache_read": "1"},
        {
            "provider": "acme",
            "model": "house-llm",
            "input": "0.5",
            "output": "1.5",
            "aliases": ["house"],
        },
    ],
}


def library_total(provider: str, model: str, usage: TokenUsage, at: datetime = AT) -> Decimal:
    calc = genai_prices.calc_price(
        Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        ),
        model,
        provider_id=provider,
        genai_request_timestamp=at,
    )
    return calc.total_price.quantize(Decimal("1e-10"))


@pytest.mark.parametrize(
    ("provider", "model", "priced_as"),
    [
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
        ("openai", "gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash"),
    ],
)
def test_dated_names_are_priced_as_genai_prices_prices_them(
    provider: str, model: str, priced_as: str
) -> None:
    usage = TokenUsage(input_tokens=12_345, output_tokens=678, cache_read_tokens=4_000)
    if provider == "anthropic":
        usage = TokenUsage(12_345, 678, cache_read_tokens=4_000, cache_write_tokens=2_000)
    cost = Pricer().cost(provider, model, usage, at=AT)
    lib_provider = {"gcp.gemini": "google"}.get(provider, provider)
    assert cost.amount == library_total(lib_provider, model, usage)
    assert cost.amount > 0
    assert cost.source is CostSource.LOCAL and cost.currency == "USD"
    assert cost.price_data == f"genai-prices@{genai_prices.__version__}" == library_version()
    assert cost.priced_model == priced_as


def test_the_served_model_is_priced_before_the_requested_one() -> None:
    pricer = Pricer()
    cost = pricer.cost("openai", "gpt-4o", USAGE, at=AT, response_model="gpt-4o-mini-2024-07-18")
    assert cost.priced_model == "gpt-4o-mini"
    assert cost.amount == library_total("openai", "gpt-4o-mini-2024-07-18", USAGE)
    # an unknown served name falls back to the requested model
    cost = pricer.cost("openai", "gpt-4o", USAGE, at=AT, response_model="gpt-4o-internal-x")
    assert cost.priced_model == "gpt-4o"


def test_prices_are_those_in_force_at_request_time() -> None:
    snapshot = get_snapshot()
    _, o3 = snapshot.find_provider_model("o3", None, "openai", None)
    assert isinstance(o3.prices, list) and len(o3.prices) > 1  # o3 changed its prices
    change = next(
        c.constraint.start_date for c in o3.prices if isinstance(c.constraint, StartDateConstraint)
    )
    before = datetime(change.year, change.month, change.day, tzinfo=UTC).replace(
        year=change.year - 1
    )
    after = datetime(change.year, change.month, change.day, tzinfo=UTC).replace(
        year=change.year + 1
    )
    pricer = Pricer()
    old = pricer.cost("openai", "o3-2025-04-16", USAGE, at=before)
    new = pricer.cost("openai", "o3-2025-04-16", USAGE, at=after)
    assert old.amount == library_total("openai", "o3-2025-04-16", USAGE, before)
    assert new.amount == library_total("openai", "o3-2025-04-16", USAGE, after)
    assert old.amount != new.amount


def test_the_fast_path_equals_the_library_over_the_whole_database() -> None:
    """Plain per-token prices are computed without the library's general machinery; the
    result must be the library's, for every model that takes that path."""
    rng = random.Random(10)
    compared = 0
    for provider in get_snapshot().providers:
        for model in provider.models:
            prices = model.get_prices(AT)
            i = rng.choice((rng.randrange(0, 150_000), rng.randrange(150_000, 400_000)))
            r = rng.randrange(0, i + 1)
            w = rng.randrange(0, i - r + 1)
            usage = TokenUsage(i, rng.randrange(0, 30_000), r, w)
            ours = _simple_amount(prices, usage)
            if ours is None:
                continue
            lib = model.calc_price(
                Usage(
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_read_tokens=usage.cache_read_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                ),
                provider,
                genai_request_timestamp=AT,
            ).total_price
            assert ours == lib, (provider.id, model.id, usage)
            compared += 1
    assert compared > 1000


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-9-ultra-2031-01-01"), ("acme", "house-llm"), ("", "x"), ("openai", "")],
)
def test_unknown_models_and_providers_are_unpriced_never_an_error(
    provider: str, model: str
) -> None:
    cost = Pricer().cost(provider, model, USAGE, at=AT)
    assert cost.source is CostSource.UNPRICED and cost.amount == 0
    assert cost.price_data is None and cost.priced_model is None


def test_a_failing_price_library_gives_unpriced(monkeypatch: pytest.MonkeyPatch) -> None:
    pricer = Pricer()

    def broken(*_: Any) -> Any:
        raise RuntimeError("price data is corrupt")

    monkeypatch.setattr(pricer, "_library_cost", broken)
    assert pricer.cost("openai", "gpt-4o", USAGE, at=AT).source is CostSource.UNPRICED


def test_impossible_token_counts_are_the_callers_mistake() -> None:
    pricer = Pricer()
    with pytest.raises(EventValidationError, match="input_tokens"):
        pricer.cost("openai", "gpt-4o", TokenUsage(-1, 0), at=AT)
    with pytest.raises(EventValidationError, match="at most input_tokens"):
        pricer.cost("openai", "gpt-4o", TokenUsage(10, 0, 8, 5), at=AT)
    with pytest.raises(EventValidationError, match="output_tokens"):
        pricer.cost("openai", "gpt-4o", TokenUsage(10, True), at=AT)


def test_overrides_take_precedence_with_their_own_version_and_currency(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(OVERRIDES))
    pricer = Pricer(load_price_overrides(path))
    cost = pricer.cost("openai", "gpt-4o", USAGE, at=AT, response_model="gpt-4o-2024-08-06")
    # (2345 uncached * 2 + 10000 cached * 1 + 678 * 8) / 1e6, in EUR
    assert cost.amount == Decimal("0.020114")
    assert (cost.currency, cost.source) == ("EUR", CostSource.LOCAL)
    assert (cost.price_data, cost.priced_model) == ("overrides@acme-2026-11", "gpt-4o")
    house = pricer.cost("acme", "house-20260101", USAGE, at=AT)  # an alias, dated
    assert house.priced_model == "house-llm"
    assert house.amount == Decimal("0.0071895")  # cache reads at the input price
    # models the file does not name still come from the library
    other = pricer.cost("anthropic", "claude-haiku-4-5", USAGE, at=AT)
    assert other.price_data == library_version()
    # overrides only: everything else is unpriced
    only = Pricer(load_price_overrides(path), library=False)
    assert only.cost("anthropic", "claude-haiku-4-5", USAGE, at=AT).source is CostSource.UNPRICED
    assert only.cost("acme", "house", USAGE, at=AT).currency == "EUR"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": ""}, "version"),
        ({"currency": "euro"}, "ISO 4217"),
        ({"unit": "per_token"}, "per_million_tokens"),
        ({"models": {}}, "list"),
        ({"colour": "red"}, "unknown keys"),
        ({"models": [{"provider": "a", "model": "m", "input": 1, "output": "1"}]}, "decimal"),
        ({"models": [{"provider": "a", "model": "m", "input": "-1", "output": "1"}]}, "negative"),
        ({"models": [{"provider": "a", "model": "m", "output": "1"}]}, "'input'"),
        ({"models": [{"provider": "a", "model": "m", "input": "1", "output": "1", "x": 1}]}, "x"),
        (
            {"models": [{"provider": "a", "model": "m", "input": "1", "output": "1"}] * 2},
            "twice",
        ),
    ],
)
def test_bad_override_files_name_the_problem(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_price_overrides({**OVERRIDES, **change})


def test_unreadable_override_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_price_overrides(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        load_price_overrides(bad)
