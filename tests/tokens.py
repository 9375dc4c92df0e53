"""An OAUTHBEARER token provider for the tests, named by FLEETLEDGER_KAFKA_SASL_OAUTH_TOKEN_PROVIDER
as ``tests.tokens:FileTokenProvider``.

Its token is the content of the file ``TEST_OAUTH_TOKEN_FILE`` names; every call
appends a line to ``<that file>.calls``, so a test can tell that the Kafka client asked for
a token (and so sent it to the broker).
"""

from __future__ import annotations

import os
from pathlib import Path

from aiokafka.abc import AbstractTokenProvider


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    def __init__(self) -> None:
        self.path = Path(os.environ["TEST_OAUTH_TOKEN_FILE"])

    async def token(self) -> str:
        with Path(f"{self.path}.calls").open("a", encoding="utf-8") as calls:
            calls.write("token\n")
        return self.path.read_text(encoding="utf-8").strip()


def not_a_provider() -> object:
    return object()
