"""HTTP for sources: one client, fetches within bounds, one mapping of failures to errors."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import zlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from alertd.errors import SourceGone, SourceInvalid, SourceThrottled, SourceUnavailable

# Every fetch, redirects and body included, ends within this (a server dripping one byte at
# a time never trips a per-read timeout), and its body, once decoded, stays under this.
DEFAULT_DEADLINE_S = 60.0
DEFAULT_MAX_BYTES = 5_000_000
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# We decode bodies ourselves, a bounded piece at a time: only what we can bound is asked for.
ACCEPT_ENCODING = "gzip, deflate"

# The public addresses of a URL's host (none when any is not public); injectable so tests can
# call a loopback server "public" without faking the server itself.
PublicCheck = Callable[[httpx.URL], Awaitable[tuple[str, ...]]]


def _is_global(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified
    )


async def public_addresses(url: httpx.URL) -> tuple[str, ...]:
    """The addresses the URL's host resolves to, if every one is public (global); else none.

    Loopback, private ranges, link-local (169.254.169.254, the cloud metadata service), CGNAT
    and the like are not public; a host that does not resolve has no addresses.
    """
    host = url.host
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return (str(literal),) if _is_global(literal) else ()
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, url.port or 443, type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError):
        return ()
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    if not addresses or not all(_is_global(a) for a in addresses):
        return ()
    return tuple(sorted(str(a) for a in addresses))


class BoundedClient(httpx.AsyncClient):
    """An AsyncClient that carries the bounds ``get`` applies to every fetch through it."""

    def __init__(
        self,
        *,
        deadline_s: float = DEFAULT_DEADLINE_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        is_public: PublicCheck = public_addresses,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deadline_s = deadline_s
        self.max_bytes = max_bytes
        self.is_public = is_public


def make_client(
    user_agent: str,
    timeout_s: float,
    *,
    accept: str = "*/*",
    deadline_s: float = DEFAULT_DEADLINE_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    is_public: PublicCheck = public_addresses,
) -> httpx.AsyncClient:
    """A client for ``get``: ``timeout_s`` per connect/read, ``deadline_s`` for a whole fetch,
    ``max_bytes`` of decoded body (``get`` follows redirects itself, checking each hop)."""
    return BoundedClient(
        deadline_s=deadline_s,
        max_bytes=max_bytes,
        is_public=is_public,
        timeout=httpx.Timeout(timeout_s),
        headers={"User-Agent": user_agent, "Accept": accept, "Accept-Encoding": ACCEPT_ENCODING},
        follow_redirects=False,
    )


def shown_url(url: httpx.URL | str) -> str:
    """A URL as errors and logs show it: without any user:password."""
    parsed = httpx.URL(str(url))
    return str(parsed.copy_with(userinfo=b"")) if parsed.userinfo else str(parsed)


async def get(
    client: httpx.AsyncClient,
    url: str,
    *,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """GET ``url`` within the client's bounds; the response whatever its status (see
    ``check_status``), its body read and decoded, and the redirects followed in its
    ``history``.

    A redirect from a public address to a non-public one (loopback, private, link-local) is
    refused: a feed on the internet must not point alertd at the machine's own network. A feed
    the operator put on a private address may still redirect within it.

    Raises:
        SourceUnavailable: a timeout (per read, or the whole fetch past its deadline), or a
            connection error.
        SourceInvalid: the body is larger than the cap once decoded, an unknown
            Content-Encoding, more than MAX_REDIRECTS redirects, or a refused redirect.
    """
    deadline_s = getattr(client, "deadline_s", DEFAULT_DEADLINE_S)
    shown = shown_url(url)
    try:
        async with asyncio.timeout(deadline_s):
            return await _get(client, url, params, headers)
    except TimeoutError as exc:
        raise SourceUnavailable(
            f"GET {shown} gave no complete answer within {deadline_s:g}s", url=shown
        ) from exc
    except httpx.TimeoutException as exc:
        raise SourceUnavailable(f"GET {shown} timed out", url=shown) from exc
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"GET {shown} failed: {exc!r}", url=shown) from exc


async def _get(
    client: httpx.AsyncClient,
    url: str,
    params: Mapping[str, str | int] | None,
    headers: Mapping[str, str] | None,
) -> httpx.Response:
    max_bytes: int = getattr(client, "max_bytes", DEFAULT_MAX_BYTES)
    public: PublicCheck = getattr(client, "is_public", public_addresses)
    request = client.build_request("GET", url, params=params, headers=headers)
    shown_as = request.url  # the URL as asked for, also when the request is pinned
    history: list[httpx.Response] = []
    # Once a hop was public, every later hop must be too.
    public_seen = False
    for _ in range(MAX_REDIRECTS + 1):
        response = await client.send(request, stream=True, follow_redirects=False)
        if request.url != shown_as:
            # A pinned hop: the response is read, and its redirects joined, as of the name.
            response.request = client.build_request("GET", shown_as, headers=headers)
        try:
            location = response.headers.get("location")
            if response.status_code in REDIRECT_STATUSES and location:
                target = _redirect_target(shown_as, location, response.status_code)
                public_seen = public_seen or bool(await public(shown_as))
                request = client.build_request("GET", target, headers=headers)
                if public_seen:
                    addresses = await public(target)
                    if not addresses:
                        raise SourceInvalid(
                            f"GET {shown_url(url)}: {shown_as.host} redirected to "
                            f"{target.host}, which is not a public address: refused",
                            url=shown_url(url),
                            status=response.status_code,
                        )
                    request = _pinned(request, addresses[0])
                history.append(response)
                shown_as = target
                continue
            body = await _read_body(response, max_bytes)
        finally:
            await response.aclose()
        return _complete(response, body, history)
    raise SourceInvalid(
        f"GET {shown_url(url)} redirects more than {MAX_REDIRECTS} times",
        url=shown_url(url),
        status=response.status_code,
    )


def _pinned(request: httpx.Request, address: str) -> httpx.Request:
    """The request sent to the address that was checked, its host name kept for the Host
    header and TLS (server name and certificate): a second DNS answer, such as a rebinding
    to 127.0.0.1 after the check, is never asked for."""
    url = request.url
    if url.host == address:
        return request
    headers = httpx.Headers(request.headers)
    headers["Host"] = url.netloc.decode("ascii")
    extensions = {**request.extensions, "sni_hostname": url.raw_host.decode("ascii")}
    return httpx.Request("GET", url.copy_with(host=address), headers=headers, extensions=extensions)


def _redirect_target(base: httpx.URL, location: str, status: int) -> httpx.URL:
    shown = shown_url(base)
    try:
        target = base.join(location)
    except httpx.InvalidURL as exc:
        raise SourceInvalid(
            f"{shown} redirected to a broken address", url=shown, status=status
        ) from exc
    if target.scheme not in ("http", "https") or not target.host:
        raise SourceInvalid(
            f"{shown} redirected to a {target.scheme}: address: refused", url=shown, status=status
        )
    return target


class _Decoder:
    """Content-Encoding undone in pieces no larger than asked for (a gzip bomb stays small)."""

    def __init__(self, encoding: str, response: httpx.Response) -> None:
        self.raw_deflate_tried = False
        if encoding in ("", "identity"):
            self.inflater = None
        elif encoding in ("gzip", "x-gzip"):
            self.inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self.inflater = zlib.decompressobj()
        else:
            raise answer_error(
                response,
                f"GET {shown_url(response.url)} answered in Content-Encoding {encoding!r}",
            )
        self.response = response

    def decode(self, data: bytes, limit: int) -> bytes:
        """At most ``limit`` bytes of what ``data`` decodes to (more means: over the cap)."""
        if self.inflater is None:
            return data
        try:
            return self.inflater.decompress(data, limit)
        except zlib.error as exc:
            # "deflate" is often sent without its zlib header, as raw deflate.
            if self.raw_deflate_tried or self.inflater.eof:
                raise answer_error(
                    self.response, f"GET {shown_url(self.response.url)} sent a broken body"
                ) from exc
            self.raw_deflate_tried = True
            self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.decode(data, limit)


async def _read_body(response: httpx.Response, max_bytes: int) -> bytes:
    encoding = response.headers.get("content-encoding", "").strip().lower()
    decoder = _Decoder(encoding, response)
    too_big = answer_error(
        response, f"GET {shown_url(response.url)} answered more than {max_bytes:,} bytes: refused"
    )
    declared = response.headers.get("content-length", "")
    if not encoding and declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    pieces: list[bytes] = []
    size = 0
    async for raw in response.aiter_raw():
        piece = decoder.decode(raw, max_bytes - size + 1)
        size += len(piece)
        if size > max_bytes:
            raise too_big
        pieces.append(piece)
    return b"".join(pieces)


def _complete(
    response: httpx.Response, body: bytes, history: list[httpx.Response]
) -> httpx.Response:
    # The body is decoded already: the headers must no longer say it is encoded.
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    complete = httpx.Response(
        response.status_code, headers=headers, content=body, request=response.request
    )
    complete.history = history
    return complete


def check_status(response: httpx.Response, *, ok: tuple[int, ...] = (200,)) -> None:
    """Accept the statuses in ``ok``; map any other to its error, which carries the URL and
    the status.

    Raises:
        SourceThrottled: 429 or 5xx with a Retry-After (worth retrying after it).
        SourceUnavailable: 429 or 5xx without one (worth retrying later).
        SourceGone: 410.
        SourceInvalid: any other status.
    """
    status = response.status_code
    if status in ok:
        return
    url = shown_url(response.url)
    shown = f"GET {url} answered HTTP {status}"
    if status == 429 or status >= 500:
        wait_s = retry_after_s(response)
        if wait_s is None:
            raise SourceUnavailable(shown, url=url, status=status)
        raise SourceThrottled(shown, url=url, status=status, retry_after_s=wait_s)
    if status == 410:
        raise SourceGone(f"{shown} (Gone)", url=url, status=status)
    raise SourceInvalid(shown, url=url, status=status)


# Longer is no number of seconds anyone means (and int() refuses thousands of digits).
_MAX_RETRY_AFTER_DIGITS = 9


def retry_after_s(response: httpx.Response) -> int | None:
    """The seconds the answer's Retry-After asks us to wait (RFC 9110 10.2.3: a number of
    seconds, or an HTTP date, counted from the answer's Date when it has one); None when it
    has none, or one that is neither."""
    value = response.headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit() and len(value) <= _MAX_RETRY_AFTER_DIGITS:
        return int(value)
    when = _http_date(value)
    if when is None:
        return None
    now = _http_date(response.headers.get("date", "")) or datetime.now(UTC)
    return max(0, math.ceil((when - now).total_seconds()))


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def answer_error(response: httpx.Response, message: str) -> SourceInvalid:
    """A SourceInvalid about this answer, carrying its URL and status."""
    return SourceInvalid(message, url=shown_url(response.url), status=response.status_code)


def json_body(response: httpx.Response) -> Any:
    """The answer's body as JSON.

    Raises:
        SourceInvalid: the body is not JSON.
    """
    try:
        return response.json()
    except ValueError as exc:
        if "html" in response.headers.get("content-type", "").lower():
            # An API answers a path it does not know with a web page, some with status 200.
            message = f"GET {response.url} returned an HTML page, not JSON (is the path right?)"
        else:
            message = f"GET {response.url} returned broken JSON: {exc}"
        raise answer_error(response, message) from exc
