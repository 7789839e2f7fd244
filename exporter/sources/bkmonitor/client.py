"""The BlueKing Monitor client: ``get_event_log``, ``search_alert`` and ``search_action``, through the
ESB or the ``bk-monitor`` API gateway (``bkmonitor.api``; routes and hints in :mod:`.apigw`).

One pooled connection per client (:mod:`.transport`: urllib3, set up as ``requests`` sets it up;
or an injected :class:`requests.Session`). Every call goes through, in order: the retry
loop (:mod:`.retry`), the global token bucket (:mod:`.ratelimit`), the concurrency semaphore
(held only while the request is on the wire, never while backing off), the HTTP request, and
the body read under a total deadline and a byte cap (:mod:`.reading`), and the envelope rules
(:mod:`.envelope`). Secrets never reach a message, an exception or a log
line (:mod:`.redact`).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter

from exporter import __version__
from exporter.errors import (
    BkApiError,
    BkAuthError,
    BkNotFoundError,
    BkRateLimitError,
    BkResponseError,
    BkRetryableError,
    BkTransportError,
)
from exporter.redact import RedactingFilter
from exporter.sources.bkmonitor.apigw import base_path, hinted, route
from exporter.sources.bkmonitor.envelope import parse_envelope
from exporter.sources.bkmonitor.ratelimit import TokenBucket
from exporter.sources.bkmonitor.reading import read_body, read_raw
from exporter.sources.bkmonitor.report import CallReporter
from exporter.sources.bkmonitor.retry import RetryPolicy, retry_call
from exporter.sources.bkmonitor.settings import BkClientSettings
from exporter.sources.bkmonitor.transport import PoolTransport, request_failed, safe_cause

__all__ = ["ApiObserver", "BkClient", "BkClientSettings"]

#: urllib3 logs request lines (query string included) at DEBUG: with ``auth_in: params`` they hold the secret.
_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry")


class ApiObserver(Protocol):
    """Told about every HTTP attempt (the daemon passes its metrics). Must not block or raise.

    ``outcome`` is one of ``ok``, ``retryable``, ``rate_limited``, ``auth``, ``not_found``, ``error``.
    """

    def api_request(self, endpoint: str, outcome: str, seconds: float) -> None: ...


def _outcome(error: BkApiError | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, BkRateLimitError):
        return "rate_limited"
    if isinstance(error, BkRetryableError):
        return "retryable"
    if isinstance(error, BkAuthError):
        return "auth"
    if isinstance(error, BkNotFoundError):
        return "not_found"
    return "error"


class BkClient:
    """Thread-safe client for the BlueKing Monitor ESB APIs the exporter uses.

    Raises only :class:`~exporter.errors.BkApiError` subclasses (after retrying the retryable
    ones). ``sleep(seconds)`` waits and returns True when woken by :meth:`close`; the default
    waits on an internal event. ``clock`` (monotonic seconds) drives latency and the rate
    limit; ``rng`` (in [0, 1)) the backoff jitter.
    """

    def __init__(
        self,
        settings: BkClientSettings,
        *,
        session: requests.Session | None = None,
        observer: ApiObserver | None = None,
        sleep: Callable[[float], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._root = settings.base_url.rstrip("/")
        self._base = self._root + base_path(settings.api, settings.stage)
        self._secrets = settings.secrets
        self._verify: bool | str = settings.ca_file or settings.verify_tls
        self._observer = observer
        self._clock = clock
        self._rng = rng
        self._closed = threading.Event()
        self._user_sleep = sleep
        self._policy = RetryPolicy(settings.max_attempts, settings.initial_backoff, settings.max_backoff)
        self._bucket = TokenBucket(settings.rate_limit, clock=clock)
        self._in_flight = threading.BoundedSemaphore(settings.max_concurrency)
        self._lock = threading.Lock()
        self._requests_sent = 0
        self._retries = 0
        self._report = CallReporter(observer, clock=clock)  # retries and undecodable bytes: logged, counted

        # A session the client creates itself carries the requests through its adapter's urllib3
        # pool (:mod:`.transport`), with the environment (proxies, REQUESTS_CA_BUNDLE, ~/.netrc) read
        # once, here, as requests reads it; a config reload builds a new client and reads it again.
        # requests' own call path costs ~2.5x the CPU, which is what limits a poll storm
        # (docs/benchmarks.md). An injected session is used through Session.request, as it is.
        self._pool: PoolTransport | None = None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_maxsize=max(10, settings.max_concurrency), max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._pool = PoolTransport(session, self._base, verify=self._verify)
            session.trust_env = False
        session.verify = self._verify
        self._session = session

        self._auth = {"bk_app_code": settings.app_code, "bk_app_secret": settings.app_secret}
        if settings.username:
            self._auth["bk_username"] = settings.username
        if settings.bk_token:
            self._auth["bk_token"] = settings.bk_token
        if settings.access_token:
            self._auth["access_token"] = settings.access_token
        self._headers = {
            "Accept": "application/json",
            "Blueking-Language": settings.language,
            "User-Agent": f"{settings.user_agent}/{__version__}",
        }
        if settings.tenant_id:
            self._headers["X-Bk-Tenant-Id"] = settings.tenant_id
        if settings.auth_in == "header":
            self._headers["X-Bkapi-Authorization"] = json.dumps(self._auth, separators=(",", ":"))

        self._log_filter: RedactingFilter | None = None
        if settings.auth_in == "params" and self._secrets:
            self._log_filter = RedactingFilter(self._secrets)
            for name in _URL_LOGGERS:
                logging.getLogger(name).addFilter(self._log_filter)

    # -- public API ------------------------------------------------------------------------

    @property
    def requests_sent(self) -> int:
        """HTTP attempts sent so far (retries included)."""
        return self._requests_sent

    @property
    def retries(self) -> int:
        """Retries made so far (attempts after a retryable failure)."""
        return self._retries

    def get_event_log(self, alarm_id: str) -> list[Any]:
        """The flow records of one alarm: the raw ``data`` list, newest first (docs/blueking-api.md §2)."""
        params: dict[str, str] = {"id": str(alarm_id)}
        if self._settings.auth_in == "params":
            params.update(self._auth)
        return self._call("get_event_log", "GET", params=params, subject=str(alarm_id), expect=list)

    def search_alert(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One page of ``search_alert`` (docs/blueking-api.md §3; the gateway's ``/app/alert/search/``):
        the raw ``data`` dict."""
        return self._post("search_alert", body)

    def search_action(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One page of ``search_action`` (the gateway's ``/app/action/search/``, docs/blueking-api.md §8.2)."""
        return self._post("search_action", body)

    @property
    def api(self) -> str:
        """``esb`` or ``apigw``."""
        return self._settings.api

    def _post(self, endpoint: str, body: Mapping[str, Any]) -> dict[str, Any]:
        payload = dict(body)
        if self._settings.auth_in == "params":
            payload.update(self._auth)
        raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        result: dict[str, Any] = self._call(endpoint, "POST", data=raw, expect=dict)
        return result

    def stop(self) -> None:
        """Wake every backoff and rate-limit sleep now (those calls end with "client closed") and
        refuse new calls: shutdown has begun. :meth:`close` still releases the session."""
        self._closed.set()

    def close(self) -> None:
        """Wake any backoff or rate-limit sleep (those calls end with "client closed"), close the session."""
        self._closed.set()
        self._session.close()
        if self._log_filter is not None:
            for name in _URL_LOGGERS:
                logging.getLogger(name).removeFilter(self._log_filter)
            self._log_filter = None

    def __enter__(self) -> BkClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self._settings
        return f"BkClient({s.base_url!r}, api={s.api!r}, auth_in={s.auth_in!r})"

    # -- internals -------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> bool:
        """Wait; True when the client was closed before or during the wait."""
        if self._closed.is_set():
            return True
        if self._user_sleep is None:
            return self._closed.wait(seconds)
        return self._user_sleep(seconds) or self._closed.is_set()

    def _retried(self, endpoint: str, subject: str | None, attempt: int, delay: float, error: BkRetryableError) -> None:
        with self._lock:
            self._retries += 1
        self._report.retrying(endpoint, subject, attempt, self._policy.max_attempts, delay, error)

    def _call(
        self,
        endpoint: str,
        method: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        subject: str | None = None,
        expect: type,
    ) -> Any:
        if self._closed.is_set():
            raise BkTransportError("client closed", endpoint=endpoint)
        path = route(self._settings.api, self._settings.stage, endpoint)
        if path is None:
            raise BkResponseError(f"{endpoint} is not published on the bk-monitor API gateway", endpoint=endpoint)
        url = self._root + path
        return retry_call(
            lambda: self._attempt(endpoint, method, url, params, data, expect, subject=subject),
            policy=self._policy,
            sleep=self._sleep,
            rng=self._rng,
            endpoint=endpoint,
            subject=subject,
            on_retry=lambda attempt, delay, error: self._retried(endpoint, subject, attempt, delay, error),
        )

    def _attempt(
        self,
        endpoint: str,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        data: bytes | None,
        expect: type,
        *,
        subject: str | None = None,
    ) -> Any:
        """One HTTP attempt: rate limit, concurrency slot, request, envelope."""
        if self._bucket.acquire(self._sleep):
            raise BkTransportError("client closed", endpoint=endpoint)
        request_id = uuid.uuid4().hex
        headers = {**self._headers, "X-Request-ID": request_id}
        if data is not None:
            headers["Content-Type"] = "application/json"
        failure: requests.RequestException | None = None
        with self._in_flight:
            with self._lock:
                self._requests_sent += 1
            started = self._clock()
            try:
                status, resp_headers, body = self._exchange(
                    endpoint, method, url, params, data, headers, started, request_id
                )
            except requests.RequestException as exc:
                failure = exc
            except BkApiError as read_error:
                self._observe(endpoint, read_error, started)
                raise
        if failure is not None:
            # Raised outside the except block, so the requests exception is the cause only
            # through safe_cause, never as an implicit __context__.
            error = request_failed(failure, endpoint, request_id, timeout=self._settings.timeout, secrets=self._secrets)
            self._observe(endpoint, error, started)
            raise error from safe_cause(failure, self._secrets)
        try:
            result = parse_envelope(
                status,
                resp_headers,
                body,
                endpoint,
                expect=expect,
                redact_secrets=self._secrets,
                on_undecodable=lambda n, rid: self._report.undecodable(endpoint, subject, n, rid),
            )
        except BkApiError as error:
            self._observe(endpoint, error, started)
            better = hinted(error, api=self._settings.api, stage=self._settings.stage)
            if better is error:
                raise
            raise better from None
        self._observe(endpoint, None, started)
        return result

    def _observe(self, endpoint: str, error: BkApiError | None, started: float) -> None:
        if self._observer is not None:
            self._observer.api_request(endpoint, _outcome(error), max(0.0, self._clock() - started))

    def _exchange(
        self,
        endpoint: str,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        data: bytes | None,
        headers: dict[str, str],
        started: float,
        request_id: str,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send one request, read its answer (status, headers, body) by the deadline and under the cap.

        Raises a ``requests`` exception when no answer came, a BkApiError when reading it failed."""
        timeout = self._settings.timeout
        deadline, cap = started + timeout, self._settings.max_response_bytes
        if self._pool is not None:
            raw = self._pool.open(
                method, url, params=dict(params) if params else None, body=data, headers=headers, timeout=timeout
            )
            rid = raw.headers.get("X-Bkapi-Request-ID") or request_id
            try:
                body = read_raw(
                    raw,
                    raw.status,
                    raw.headers,
                    endpoint=endpoint,
                    deadline=deadline,
                    clock=self._clock,
                    cap=cap,
                    timeout=timeout,
                    request_id=rid,
                )
            finally:
                raw.release_conn()  # closed first by read_raw when not read to its end
            return raw.status, raw.headers, body
        response = self._session.request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,  # never replay credentials to another location
            stream=True,  # the body is read by read_body, under the deadline and the cap
            verify=self._verify,
        )
        try:
            rid = response.headers.get("X-Bkapi-Request-ID") or request_id
            body = read_body(
                response,
                endpoint=endpoint,
                deadline=deadline,
                clock=self._clock,
                cap=cap,
                timeout=timeout,
                request_id=rid,
            )
        finally:
            response.close()
        return response.status_code, response.headers, body
