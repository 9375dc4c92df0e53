"""The console's guard: one ASGI middleware in front of every route.

* **Binding.** Loopback (127.0.0.0/8, ::1, localhost) is the default; any other address
  needs a token (:func:`check_bind`).
* **Token.** With a token configured, every request -- pages, static files, the API, the
  OpenAPI description and the event stream -- must carry it: ``Authorization: Bearer
  TOKEN`` (tools), or the cookie a browser gets by opening any page once with
  ``?token=TOKEN`` (the token is then removed from the address by a redirect; browsers'
  EventSource sends the cookie, it cannot send headers).  Compared in constant time.
* **Host.** A loopback console without a token answers only requests addressed to a
  loopback name, so a web page that rebinds its own DNS name to 127.0.0.1 cannot read it.
* **Read-only.** Only GET and HEAD.
* **Headers.** A Content-Security-Policy that allows scripts and styles from the console
  itself only (no inline script, no eval, no other origin), no framing, no referrer, and
  ``nosniff`` -- so recorded text that slipped past escaping would still run nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fleetledger.kernel.errors import ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "fleetledger_console"
TOKEN_PARAM = "token"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind, or a Host header's name) is loopback."""
    name = host.strip().lower().strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"console bind address {host!r} is not loopback; expected FLEETLEDGER_CONSOLE_TOKEN "
            "(at least 16 characters) so every request must carry it, or --host 127.0.0.1"
        )


def _host_name(value: str) -> str:
    value = value.strip()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """The middleware (see the module's description)."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback: bool) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._check_host = loopback and token is None

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        headers = dict(scope.get("headers", ()))
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer " and hmac.compare_digest(auth[7:].strip(), self._token):
            return True
        raw = headers.get(b"cookie")
        if raw:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(raw.decode("latin-1"))
            except Exception:  # a malformed cookie header is no credential
                return False
            morsel = jar.get(COOKIE)
            if morsel is not None and hmac.compare_digest(morsel.value.encode(), self._token):
                return True
        return False

    def _token_in_query(self, scope: Scope) -> tuple[bool, str]:
        """(the query carries the right token, the query without it)."""
        pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in pairs if k == TOKEN_PARAM]
        rest = urlencode([(k, v) for k, v in pairs if k != TOKEN_PARAM])
        ok = bool(self._token and given and hmac.compare_digest(given[-1].encode(), self._token))
        return ok, rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = headers
            await send(message)

        if self._check_host:
            host = dict(scope.get("headers", ())).get(b"host", b"").decode("latin-1")
            if not is_loopback(_host_name(host)):
                await _plain(send_with_headers, 421, "this console answers loopback names only")
                return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(
                send_with_headers, 405, "the console is read-only", [(b"allow", b"GET, HEAD")]
            )
            return
        if not self._authorized(scope):
            ok, rest = self._token_in_query(scope)
            if ok and self._token is not None:
                # a browser's first visit: keep the token in a cookie, drop it from the URL
                location = scope.get("path", "/") + (f"?{rest}" if rest else "")
                cookie = (
                    f"{COOKIE}={self._token.decode()}; Path=/; HttpOnly; SameSite=Strict"
                ).encode()
                await _plain(
                    send_with_headers,
                    303,
                    "authenticated",
                    [(b"location", location.encode("latin-1")), (b"set-cookie", cookie)],
                )
                return
            await _plain(
                send_with_headers,
                401,
                "this console requires its token (Authorization: Bearer TOKEN, or open a page "
                "once with ?token=TOKEN)",
                [(b"www-authenticate", b'Bearer realm="fleetledger console"')],
            )
            return
        await self.app(scope, receive, send_with_headers)


async def _plain(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["COOKIE", "CSP", "Guard", "check_bind", "is_loopback"]
