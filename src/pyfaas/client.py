"""The pyfaas SDK: a small async client of the HTTP API, and of the gateway for calls.

The ``faas`` CLI is built on it; scripts and notebooks use it the same way::

    async with Client(Config.load()) as faas:
        fn = await faas.create(Path("main.py").read_text(), name="hello")
        fn = await faas.wait(fn.id)
        print(fn.url)

Every error the API answers (``application/problem+json``, RFC 9457) is raised as
:class:`ApiError` with the API's human message; a platform that cannot be reached is
:class:`Unreachable`; a function that does not come up is :class:`FunctionFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import aiohttp

from pyfaas_common.invoke_keys import INVOKE_KEY_HEADER
from pyfaas_common.schemas import FunctionResource

from .config import Config

Function = FunctionResource
"""A function as the API returns it (id, name, state, reason, url, generations...)."""

USER_AGENT = "pyfaas-sdk/0.1"
_UNSET: Any = object()


class PyfaasError(Exception):
    """Everything this module raises. ``str()`` is a message a person can act on."""


class ApiError(PyfaasError):
    """The API (or the gateway) refused or failed a request, with its problem details."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        type: str = "about:blank",
        errors: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{title}: {detail}" if title else detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors = errors or []
        self.retry_after: float | None = None
        """The answer's ``Retry-After`` in seconds, when it had one (a 429, a 503)."""

    @property
    def problem(self) -> dict[str, Any]:
        """The problem document, for ``--json`` output."""
        doc: dict[str, Any] = {
            "type": self.type, "title": self.title, "status": self.status, "detail": self.detail,
        }  # fmt: skip
        if self.errors:
            doc["errors"] = [{"field": f, "message": m} for f, m in self.errors]
        return doc


class Unreachable(PyfaasError):
    """Nothing answered at the API's (or the gateway's) address."""


class AnswerLost(Unreachable):
    """The request was sent but its answer never came (a timeout, a dropped connection):
    it may or may not have been carried out."""


class FunctionFailed(PyfaasError):
    """The function (or its new generation) did not come up; ``function.reason`` says why."""

    def __init__(self, function: Function, message: str) -> None:
        super().__init__(message)
        self.function = function


class WaitTimeout(PyfaasError):
    """Waiting for the function gave up; it may still get there."""

    def __init__(self, function: Function, message: str) -> None:
        super().__init__(message)
        self.function = function


@dataclass(frozen=True, slots=True)
class CallResult:
    """What a function answered through the gateway."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One event of a log follow: a ``line``, a ``gap`` (lines were lost) or the ``end``."""

    kind: str
    text: str = ""


@dataclass(slots=True)
class _SseEvent:
    event: str = "message"
    data: list[str] = field(default_factory=list)


def _as_id(function_id: str | UUID) -> str:
    return str(function_id)


def problem_from(status: int, content_type: str, body: bytes) -> ApiError:
    """An :class:`ApiError` from any error answer; a problem document gives the message."""
    if content_type in ("application/problem+json", "application/json"):
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "detail" in doc:
            errors = [
                (str(e.get("field", "")), str(e.get("message", "")))
                for e in doc.get("errors") or []
                if isinstance(e, dict)
            ]
            return ApiError(
                int(doc.get("status", status)),
                str(doc.get("title", "")),
                str(doc["detail"]),
                str(doc.get("type", "about:blank")),
                errors,
            )
    text = body.decode("utf-8", "replace").strip()
    return ApiError(status, f"HTTP {status}", text[:500] or "no explanation was given")


class Client:
    """One API address, one user, one token; an aiohttp session owned by the client."""

    def __init__(self, config: Config | None = None, *, timeout: float = 30.0) -> None:
        self.config = config or Config.load()
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"User-Agent": USER_AGENT}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    def _user(self, user: str | None) -> str | None:
        """Whose functions: the one asked for, the configured one, or (with a token and
        no user) None, which the API reads as the token's user."""
        who = user or self.config.user
        if not who and not self.config.token:
            raise PyfaasError(
                'no user: pass --user, set PYFAAS_USER, or put user = "..." in the config file'
            )
        return who or None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        url = f"{self.config.api_url}{path}"
        try:
            async with self.session.request(
                method, url, json=body, params=params, headers=headers
            ) as r:
                data = await r.read()
                if r.status >= 400:
                    error = problem_from(r.status, r.content_type, data)
                    with contextlib.suppress(KeyError, ValueError):
                        error.retry_after = float(r.headers["Retry-After"])
                    raise error
                return json.loads(data) if data else None
        except aiohttp.ClientConnectorError as exc:  # nothing was sent
            raise Unreachable(
                f"cannot reach the pyfaas API at {self.config.api_url} ({exc}); "
                "is it running (faas dev), and is PYFAAS_API_URL right?"
            ) from None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:  # sent, no answer
            raise AnswerLost(
                f"the pyfaas API at {self.config.api_url} did not answer "
                f"({exc or type(exc).__name__}); the request may or may not have been carried out"
            ) from None

    # --- functions ---------------------------------------------------------------------
    async def create(
        self,
        code: str | None = None,
        *,
        source: str | None = None,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        private: bool = False,
        idle_timeout: int | None = _UNSET,
        delete_after: int | None = _UNSET,
        user: str | None = None,
        idempotency_key: str | None = None,
        retries: int = 3,
    ) -> Function:
        """Deploy ``code``, or the script at the URL ``source`` (pyfaas fetches it). A
        private function's answer carries its ``invoke_key``, once: keep it.

        The create carries an ``Idempotency-Key`` (``idempotency_key``, or a new one), so a
        503 or a lost answer is retried — up to ``retries`` times, after ``Retry-After`` —
        without ever making a second function."""
        if (code is None) == (source is None):
            raise PyfaasError("give the script's code or a source URL (one of them)")
        body: dict[str, Any] = {}
        if (who := self._user(user)) is not None:
            body["user"] = who
        if code is not None:
            body["code"] = code
        else:
            body["source"] = {"url": source}
        if name is not None:
            body["name"] = name
        if env:
            body["env"] = dict(env)
        if secrets:
            body["secrets"] = dict(secrets)
        if private:
            body["visibility"] = "private"
        if idle_timeout is not _UNSET:
            body["idle_timeout"] = idle_timeout
        if delete_after is not _UNSET:
            body["delete_after"] = delete_after
        headers = {"Idempotency-Key": idempotency_key or str(uuid4())}
        attempt = 0
        while True:
            try:
                data = await self._request("POST", "/faas/python", body=body, headers=headers)
                return Function.model_validate(data)
            except ApiError as exc:
                # 503: not stored, or not known to be; 502/504: a proxy in front of the
                # API lost the answer. The key makes a retry of either safe.
                if exc.status not in (502, 503, 504) or attempt >= retries:
                    raise
                delay = min(1.0 if exc.retry_after is None else exc.retry_after, 5.0)
            except AnswerLost:
                if attempt >= retries:
                    raise
                delay = 1.0
            attempt += 1
            await asyncio.sleep(delay)

    async def list_functions(self, user: str | None = None) -> list[Function]:
        who = self._user(user)
        data = await self._request("GET", "/faas/python", params={"user": who} if who else None)
        return [Function.model_validate(f) for f in data["functions"]]

    async def get(self, function_id: str | UUID) -> Function:
        return Function.model_validate(
            await self._request("GET", f"/faas/python/{_as_id(function_id)}")
        )

    async def update(
        self,
        function_id: str | UUID,
        *,
        code: str | None = None,
        env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        private: bool | None = None,
        rotate_invoke_key: bool = False,
        idle_timeout: int | None = _UNSET,
        delete_after: int | None = _UNSET,
    ) -> Function:
        """A new generation; the answer carries the generation to :meth:`wait` for (and
        a new ``invoke_key`` when one was made)."""
        body: dict[str, Any] = {}
        if code is not None:
            body["code"] = code
        if env is not None:
            body["env"] = dict(env)
        if secrets is not None:
            body["secrets"] = dict(secrets)
        if private is not None:
            body["visibility"] = "private" if private else "public"
        if rotate_invoke_key:
            body["rotate_invoke_key"] = True
        if idle_timeout is not _UNSET:
            body["idle_timeout"] = idle_timeout
        if delete_after is not _UNSET:
            body["delete_after"] = delete_after
        data = await self._request("PUT", f"/faas/python/{_as_id(function_id)}", body=body)
        return Function.model_validate(data)

    async def delete(self, function_id: str | UUID) -> Function:
        data = await self._request("DELETE", f"/faas/python/{_as_id(function_id)}")
        return Function.model_validate(data)

    async def logs(self, function_id: str | UUID, tail: int = 100) -> list[str]:
        data = await self._request(
            "GET", f"/faas/python/{_as_id(function_id)}/logs", params={"tail": str(tail)}
        )
        return list(data["lines"])

    async def follow_logs(
        self, function_id: str | UUID, tail: int = 10, *, silence: float = 30.0
    ) -> AsyncIterator[LogEvent]:
        """The last ``tail`` lines, then each new one as the function prints it; ends
        after an ``end`` event (the function was deleted, or the platform restarted).
        Raises :class:`Unreachable` when the stream stays silent for ``silence`` seconds
        (the API sends a heartbeat every few)."""
        url = f"{self.config.api_url}/faas/python/{_as_id(function_id)}/logs"
        params = {"tail": str(tail), "follow": "true"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=silence)
        try:
            async with self.session.get(url, params=params, timeout=timeout) as r:
                if r.status >= 400:
                    raise problem_from(r.status, r.content_type, await r.read())
                event = _SseEvent()
                async for raw in r.content:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "event":
                            event.event = value
                        elif name == "data":
                            event.data.append(value)
                        continue  # a comment (heartbeat) or a field of the event
                    if event.data or event.event != "message":
                        text = "\n".join(event.data)
                        if event.event == "message":
                            yield LogEvent("line", text)
                        elif event.event == "gap":
                            yield LogEvent("gap", text)
                        elif event.event == "end":
                            yield LogEvent("end", text)
                            return
                    event = _SseEvent()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise Unreachable(
                f"lost the log stream from {self.config.api_url} "
                f"({exc or type(exc).__name__}); follow again"
            ) from None
        yield LogEvent("end", "the API closed the stream; follow again")

    async def wait(
        self,
        function_id: str | UUID,
        *,
        generation: int | None = None,
        timeout: float = 300.0,
        on_change: Callable[[Function], None] | None = None,
        poll: float = 0.25,
    ) -> Function:
        """Until the function has acted on ``generation`` (default: its current one):
        returns it when it serves (or sleeps, for an update of a sleeping function);
        raises :class:`FunctionFailed` when it failed, or when an update did not start and
        the previous generation still serves; :class:`WaitTimeout` after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: tuple[str, int, str] | None = None
        while True:
            fn = await self.get(function_id)
            seen = (fn.state, fn.observed_generation, fn.reason)
            if on_change is not None and seen != last:
                on_change(fn)
            last = seen
            target = generation or fn.generation
            if fn.observed_generation >= target:
                if fn.state == "ready" and not fn.reason:
                    return fn
                if fn.state == "ready":
                    raise FunctionFailed(fn, fn.reason)
                if fn.state == "failed":
                    raise FunctionFailed(fn, fn.reason or "the function failed")
                if fn.state == "sleeping":
                    return fn
            if fn.state in ("deleting", "deleted"):
                raise FunctionFailed(fn, "the function is being deleted")
            if time.monotonic() > deadline:
                raise WaitTimeout(
                    fn,
                    f"the function is still {fn.state} after {timeout:g}s "
                    f"(generation {fn.observed_generation} of {target}); "
                    f"see `faas logs {fn.id}`",
                )
            await asyncio.sleep(poll)

    async def wait_deleted(self, function_id: str | UUID, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fn = await self.get(function_id)
            except ApiError as exc:
                if exc.status == 404:
                    return
                raise
            if time.monotonic() > deadline:
                raise WaitTimeout(fn, f"the function is still {fn.state} after {timeout:g}s")
            await asyncio.sleep(0.25)

    # --- the gateway -------------------------------------------------------------------
    async def call(
        self,
        function_id: str | UUID,
        path: str = "",
        *,
        method: str = "GET",
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        invoke_key: str | None = None,
    ) -> CallResult:
        """Call the function through the gateway (``PYFAAS_GATEWAY_URL``, else the URL the
        API gives the function). Answers of the function itself, errors included, are
        returned; the gateway's own refusals (no such function, it failed, it is not
        ready, it is private and the caller may not) raise :class:`ApiError`.

        The token goes along (a private function takes its owner's token; the gateway
        removes it before the function sees the request); ``invoke_key`` calls a private
        function without one."""
        sent = dict(headers or {})
        if invoke_key:
            sent[INVOKE_KEY_HEADER] = invoke_key
        elif self.config.token and not any(k.lower() == "authorization" for k in sent):
            sent["Authorization"] = f"Bearer {self.config.token}"
        if self.config.gateway_url:
            base = f"{self.config.gateway_url}/gateway/{_as_id(function_id)}/"
        else:
            base = (await self.get(function_id)).url
        url = base + path.lstrip("/")
        try:
            async with (
                aiohttp.ClientSession(
                    headers={"User-Agent": USER_AGENT}, timeout=aiohttp.ClientTimeout(total=None)
                ) as session,
                session.request(method, url, data=data, headers=sent) as r,
            ):
                body = await r.read()
                if _gateway_problem(r, body):
                    raise problem_from(r.status, r.content_type, body)
                return CallResult(r.status, dict(r.headers), body)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise Unreachable(
                f"cannot reach the gateway at {url} ({exc or type(exc).__name__}); "
                "set PYFAAS_GATEWAY_URL if the function's URL is not reachable from here"
            ) from None


def _gateway_problem(r: aiohttp.ClientResponse, body: bytes) -> bool:
    """The gateway's own errors are problem documents of pyfaas' types; a function's
    answers pass through untouched, whatever their status."""
    if r.status < 400 or r.content_type != "application/problem+json":
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    kind = doc.get("type", "") if isinstance(doc, dict) else ""
    return isinstance(kind, str) and (
        kind.startswith("https://pyfaas.dev/problems/") or kind == "about:blank"
    )
