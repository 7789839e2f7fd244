"""The client's HTTP transport: one urllib3 connection pool, set up the way ``requests`` sets it up.

``requests`` spends most of a ``get_event_log`` call's CPU outside the network: building a
``Request``, merging session settings, preparing and re-quoting the URL, the cookie jar, the
redirect machinery, a ``Response`` object (docs/benchmarks.md measures it against this
transport). :class:`PoolTransport` keeps what ``requests`` decides once per client and sends every
request straight through the urllib3 pool ``requests``' own :class:`~requests.adapters.HTTPAdapter`
would use, with the same arguments ``HTTPAdapter.send`` passes:

* the environment (``HTTP(S)_PROXY``/``NO_PROXY``, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``,
  ``~/.netrc``) is read once, when the client is built, exactly as ``requests`` reads it (a
  config reload builds a new client and reads it again);
* the pool, its TLS settings (``verify``, a CA file) and any proxy come from ``HTTPAdapter``;
* the headers ``requests`` adds by default (``Accept-Encoding``, ``Connection``) and the netrc
  ``Authorization`` are sent as ``requests`` sends them;
* redirects are never followed, nothing is retried here (:mod:`.retry` does that), and every
  failure is raised as the ``requests`` exception ``HTTPAdapter.send`` would raise, so the
  client's error mapping (:func:`request_failed`, :func:`safe_cause`) is the same for both
  transports.

There is no cookie jar (BlueKing's APIs authenticate every call by its credentials). Closing the
session closes the pool. An injected :class:`requests.Session` (tests, embedders) is used as it is
instead, through ``Session.request``.
"""

from __future__ import annotations

import threading
from base64 import b64encode
from typing import Any
from urllib.parse import urlencode

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_ACCEPT_ENCODING, get_auth_from_url, get_netrc_auth
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    LocationValueError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import HTTPError as _HTTPError
from urllib3.exceptions import InvalidHeader as _InvalidHeader
from urllib3.exceptions import ProxyError as _ProxyError
from urllib3.exceptions import SSLError as _SSLError

from exporter.errors import BkApiError, BkResponseError, BkTransportError
from exporter.redact import redact, strip_query

__all__ = ["TRANSPORT_FAILURES", "PoolTransport", "read_environment", "request_failed", "safe_cause"]

#: requests failures that mean "no (complete) answer": worth a retry.
TRANSPORT_FAILURES = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


def read_environment(session: requests.Session, url: str, verify: bool | str) -> dict[str, Any]:
    """Proxies, TLS verification and netrc auth for ``url`` as ``requests`` would take them from the
    environment on a call (``trust_env``): ``{"proxies": …, "verify": …, "auth": …}``."""
    env = session.merge_environment_settings(url, {}, None, verify, None)
    return {"proxies": env["proxies"], "verify": env["verify"], "auth": get_netrc_auth(url)}


def _basic(user: str, password: str) -> str:
    token = b64encode(b":".join((user.encode("latin1"), password.encode("latin1")))).strip()
    return "Basic " + token.decode("ascii")


class PoolTransport:
    """Requests to one BlueKing host through a pooled urllib3 connection (thread-safe)."""

    def __init__(self, session: requests.Session, root: str, *, verify: bool | str) -> None:
        """``session`` is the client's own (an :class:`HTTPAdapter` mounted for ``root``, ``trust_env``
        still on): its adapter's pool carries the requests; the environment is read here, once."""
        url = root + "/"
        env = read_environment(session, url, verify)
        adapter = session.get_adapter(url)
        if not isinstance(adapter, HTTPAdapter):
            raise TypeError(f"the session's adapter for {strip_query(url)} is not an HTTPAdapter")
        self._adapter = adapter
        self._proxies: dict[str, str] = env["proxies"]
        self._verify: bool | str = env["verify"]
        self._retries = adapter.max_retries  # Retry(0, read=False): the failures requests sees
        self._extra = {"Accept-Encoding": DEFAULT_ACCEPT_ENCODING, "Connection": "keep-alive"}
        auth = env["auth"] or get_auth_from_url(root)
        if auth and any(auth):
            self._extra["Authorization"] = _basic(*auth)
        self._targets: dict[str, tuple[Any, str]] = {}  # URL -> (pool, request target)
        self._lock = threading.Lock()

    def _target(self, url: str) -> tuple[Any, str]:
        """The pool and the request target for ``url`` (prepared as requests prepares it), cached."""
        found = self._targets.get(url)
        if found is not None:
            return found
        prepared = requests.Request("GET", url).prepare()
        try:
            pool = self._adapter.get_connection_with_tls_context(prepared, self._verify, proxies=self._proxies)
        except LocationValueError as exc:
            raise requests.exceptions.InvalidURL(exc) from exc
        self._adapter.cert_verify(pool, str(prepared.url), self._verify, None)
        target = self._adapter.request_url(prepared, self._proxies)
        with self._lock:
            self._targets[url] = (pool, target)
        return pool, target

    def open(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request; the answer's body is left unread (``preload_content=False``).

        Raises the ``requests`` exception ``HTTPAdapter.send`` raises for the same failure."""
        pool, target = self._target(url)
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        headers = {**self._extra, **headers}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        try:
            return pool.urlopen(
                method=method,
                url=target,
                body=body,
                headers=headers,
                redirect=False,  # never replay credentials to another location
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=self._retries,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                chunked=False,
            )
        except (ProtocolError, OSError) as err:
            raise requests.ConnectionError(err) from err
        except MaxRetryError as err:
            reason = err.reason
            if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
                raise requests.ConnectTimeout(err) from err
            if isinstance(reason, ResponseError):
                raise requests.exceptions.RetryError(err) from err
            if isinstance(reason, _ProxyError):
                raise requests.exceptions.ProxyError(err) from err
            if isinstance(reason, _SSLError):
                raise requests.exceptions.SSLError(err) from err
            raise requests.ConnectionError(err) from err
        except ClosedPoolError as err:
            raise requests.ConnectionError(err) from err
        except _ProxyError as err:
            raise requests.exceptions.ProxyError(err) from err
        except _SSLError as err:
            raise requests.exceptions.SSLError(err) from err
        except ReadTimeoutError as err:
            raise requests.ReadTimeout(err) from err
        except _InvalidHeader as err:
            raise requests.exceptions.InvalidHeader(err) from err
        except _HTTPError as err:
            raise requests.RequestException(err) from err


def request_failed(
    exc: requests.RequestException, endpoint: str, request_id: str, *, timeout: float, secrets: tuple[str, ...]
) -> BkApiError:
    """Our own, secret-free error for a failed request (``requests`` messages quote the URL)."""
    if isinstance(exc, requests.Timeout):
        kind = "timed out"
        if isinstance(exc, requests.ConnectTimeout):
            kind = "connect timed out"
        summary = f"{kind} after {timeout:g}s"
    elif isinstance(exc, requests.exceptions.SSLError):
        summary = "TLS error"
    elif isinstance(exc, TRANSPORT_FAILURES):
        summary = "connection failed"
    else:
        summary = "request could not be sent"
    detail = redact(strip_query(str(exc)), secrets)
    if len(detail) > 300:
        detail = detail[:299] + "…"
    cls = BkTransportError if isinstance(exc, TRANSPORT_FAILURES) else BkResponseError
    return cls(f"{summary}: {type(exc).__name__}", endpoint=endpoint, bk_message=detail or None, request_id=request_id)


def safe_cause(exc: requests.RequestException, secrets: tuple[str, ...]) -> BaseException:
    """``exc`` itself when no message in its chain holds a secret, else a scrubbed stand-in.

    With ``auth_in: params`` the URL carries the secret, and requests/urllib3 quote URLs in
    their messages (and in the messages of the exceptions they chain): a traceback printed
    by the caller must not show it.
    """
    if not secrets:
        return exc
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        for text in (str(link), repr(link.args)):
            if redact(text, secrets) != text:
                return _stand_in(exc, secrets)
        link = link.__cause__ or link.__context__
    return exc


def _stand_in(exc: requests.RequestException, secrets: tuple[str, ...]) -> BaseException:
    text = redact(strip_query(str(exc)), secrets)
    try:
        return type(exc)(text)
    except Exception:  # an exception type with a constructor of its own
        return requests.RequestException(text)
