"""The ``faas`` command: how people use pyfaas day to day.

A console script of the workspace (``faas = "pyfaas.cli:main"``); ``python -m pyfaas.cli``
is the same. Every command but ``init`` and ``dev`` talks to the HTTP API through the SDK
(:mod:`pyfaas.client`); ``dev`` starts the whole platform (:mod:`pyfaas.dev`). It imports no
service package (an import-linter contract): the API is its only way in.

Exit codes, for scripts: see :class:`Exit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Callable, Coroutine
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from pyfaas_common.auth import Authenticator, AuthSettings
from pyfaas_common.schemas import CreateRequest, UpdateRequest, field_errors
from pyfaas_common.validation import NAME_RE

from . import templates
from .client import (
    ApiError,
    Client,
    Function,
    FunctionFailed,
    PyfaasError,
    Unreachable,
    WaitTimeout,
)
from .config import Config, ConfigError

T = TypeVar("T")


class Exit(IntEnum):
    """What ``faas`` exits with. Scripts may rely on these."""

    OK = 0
    API_ERROR = 1
    """The API refused or failed the request (or a called function answered >= 400)."""
    USAGE = 2
    """Bad flags or arguments, or a script or setting refused before anything was sent."""
    FUNCTION_FAILED = 3
    """The function (or the new generation of an update) did not start; see its reason."""
    NOT_FOUND = 4
    """No such function."""
    UNREACHABLE = 5
    """The API or the gateway did not answer, or said it is unavailable (503): retry."""
    TIMEOUT = 6
    """Gave up waiting (``--timeout``); the function may still get there."""


# Python versions a script may ask for, locally: whether *this* platform runs one of
# them is the API's to say (it knows its versions); here we catch only what can never be.
_ANY_PYTHON = [f"3.{minor}.{patch}" for minor in range(8, 20) for patch in range(30)]

# Piped, a table keeps every column whole instead of fitting 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)
err = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="faas",
    help="pyfaas: deploy one Python script with PEP 723 metadata, get a URL.\n\n"
    "Configuration: flags, else PYFAAS_API_URL, PYFAAS_GATEWAY_URL, PYFAAS_USER, "
    "PYFAAS_TOKEN, else ~/.config/pyfaas/config.toml. Exit codes: 0 ok, 1 API error, "
    "2 usage, 3 function failed, 4 not found, 5 unreachable, 6 timed out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
FunctionRef = Annotated[str, typer.Argument(help="The function's id, or its name if unique.")]
EnvFlag = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", help="K=V, repeatable: the function's environment."),
]
IdleFlag = Annotated[
    int | None,
    typer.Option("--idle-timeout", help="Seconds without a request before it sleeps; 0: never."),
]
DeleteAfterFlag = Annotated[
    int | None,
    typer.Option("--delete-after", help="Seconds asleep before it is deleted; 0: never."),
]
SecretFlag = Annotated[
    list[str] | None,
    typer.Option(
        "--secret", "-s", help="K=V, repeatable: a secret variable (never shown back, not logged)."
    ),
]
TimeoutFlag = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for it to be ready.")
]


# --- plumbing ---------------------------------------------------------------------------
def _fail(code: Exit, message: str, problem: dict[str, Any] | None = None) -> NoReturn:
    err.print(f"error: {message}", markup=False)
    if problem is not None:
        print(json.dumps({"error": problem}, indent=2))
    raise typer.Exit(code)


def _config(ctx: typer.Context) -> Config:
    config = ctx.obj
    assert isinstance(config, Config)
    return config


def _run(
    ctx: typer.Context,
    work: Callable[[Client], Coroutine[Any, Any, T]],
    as_json: bool = False,
) -> T:
    """Run one command's work with a client; turn every SDK error into its exit code."""

    async def main() -> T:
        async with Client(_config(ctx)) as client:
            return await work(client)

    def problem(doc: dict[str, Any]) -> dict[str, Any] | None:
        return doc if as_json else None

    try:
        return asyncio.run(main())
    except ApiError as exc:
        code = {404: Exit.NOT_FOUND, 503: Exit.UNREACHABLE}.get(exc.status, Exit.API_ERROR)
        if exc.type.endswith("/function-failed"):
            code = Exit.FUNCTION_FAILED
        _fail(code, str(exc), problem(exc.problem))
    except Unreachable as exc:
        _fail(Exit.UNREACHABLE, str(exc), problem({"title": "Unreachable", "detail": str(exc)}))
    except FunctionFailed as exc:
        if as_json:
            print(_dump(exc.function))
        _fail(Exit.FUNCTION_FAILED, str(exc))
    except WaitTimeout as exc:
        if as_json:
            print(_dump(exc.function))
        _fail(Exit.TIMEOUT, str(exc))
    except PyfaasError as exc:
        _fail(Exit.USAGE, str(exc))


def _dump(value: Function | list[Function]) -> str:
    if isinstance(value, list):
        return json.dumps([f.model_dump(mode="json") for f in value], indent=2)
    return json.dumps(value.model_dump(mode="json"), indent=2)


async def _resolve(client: Client, ref: str) -> str:
    """A function id from an id or a name (unique among the user's functions)."""
    try:
        return str(UUID(ref))
    except ValueError:
        pass
    if not NAME_RE.match(ref):
        _fail(Exit.USAGE, f"{ref!r} is neither a function id (a UUID) nor a function name")
    matches = [f for f in await client.list_functions() if f.name == ref]
    if not matches:
        _fail(Exit.NOT_FOUND, f"no function named {ref!r} for user {client.config.user!r}")
    if len(matches) > 1:
        ids = ", ".join(f.id for f in matches)
        _fail(Exit.USAGE, f"several functions are named {ref!r} ({ids}); use an id")
    return matches[0].id


def _parse_env(pairs: list[str] | None, flag: str = "--env") -> dict[str, str] | None:
    if pairs is None:
        return None
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(Exit.USAGE, f"{flag} {pair!r}: write KEY=VALUE")
        env[key] = value
    return env


def _show_invoke_key(fn: Function) -> None:
    if fn.invoke_key:
        err.print(
            f"invoke key (shown once; pyfaas keeps only its hash): {fn.invoke_key}\n"
            f"call it with the header X-Pyfaas-Invoke-Key, or: faas call {fn.id} --key <key>",
            markup=False,
        )


def _read_script(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        _fail(Exit.USAGE, f"{path}: no such file")
    except UnicodeDecodeError:
        _fail(Exit.USAGE, f"{path}: not UTF-8 text; a function is one Python script")
    except OSError as exc:
        _fail(Exit.USAGE, f"{path}: {exc.strerror}")


def _check(model: type[CreateRequest] | type[UpdateRequest], body: dict[str, Any]) -> None:
    """Refuse locally what the API would refuse, with the same words."""
    try:
        model.model_validate(body, context={"python_versions": _ANY_PYTHON})
    except ValidationError as exc:
        for field, message in field_errors(exc):
            err.print(f"error: {field}: {message}", markup=False)
        raise typer.Exit(Exit.USAGE) from None


def _default_name(path: Path) -> str:
    """``hello.py`` -> hello; ``hello/main.py`` -> hello; else ``main``."""
    for candidate in (path.stem, path.resolve().parent.name):
        candidate = re.sub(r"[^a-z0-9-]+", "-", candidate.lower()).strip("-")[:63].strip("-")
        if candidate and candidate != "main" and NAME_RE.match(candidate):
            return candidate
    return "main"


class _Progress:
    """The state as it moves: a line per change on stderr, and a spinner on a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.status = err.status(f"{label}: waiting") if err.is_terminal else None

    def __enter__(self) -> _Progress:
        if self.status is not None:
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def __call__(self, fn: Function) -> None:
        text = f"{self.label}: {fn.state} (generation {fn.observed_generation}/{fn.generation})"
        if self.status is not None:
            self.status.update(text)
        else:
            err.print(text, markup=False)


# --- commands -------------------------------------------------------------------------
@app.callback()
def options(
    ctx: typer.Context,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="The API [PYFAAS_API_URL].")
    ] = None,
    gateway_url: Annotated[
        str | None, typer.Option("--gateway-url", help="The gateway [PYFAAS_GATEWAY_URL].")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="[PYFAAS_USER]")] = None,
    token: Annotated[str | None, typer.Option("--token", help="[PYFAAS_TOKEN]")] = None,
) -> None:
    try:
        ctx.obj = Config.load(api_url=api_url, gateway_url=gateway_url, user=user, token=token)
    except ConfigError as exc:
        _fail(Exit.USAGE, str(exc))


@app.command()
def init(
    name_or_path: Annotated[
        Path, typer.Argument(help="A directory to create (NAME/main.py) or a .py file.")
    ],
    template: Annotated[
        str, typer.Option("--template", "-t", help="http, aiohttp or mcp.")
    ] = "http",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a PEP 723 script, ready to deploy."""
    if template not in templates.TEMPLATES:
        _fail(Exit.USAGE, f"--template {template!r}: choose {', '.join(templates.TEMPLATES)}")
    path = name_or_path if name_or_path.suffix == ".py" else name_or_path / "main.py"
    if path.exists() and not force:
        _fail(Exit.USAGE, f"{path} exists; pass --force to overwrite it")
    name = _default_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(templates.render(template, name), encoding="utf-8")
    except OSError as exc:
        _fail(Exit.USAGE, f"{path}: {exc.strerror}")
    err.print(f"wrote {path} ({template}); deploy it with:  faas deploy {path}", markup=False)


@app.command()
def deploy(
    ctx: typer.Context,
    script: Annotated[
        Path | None,
        typer.Argument(help="The script (PEP 723), e.g. main.py; leave out with --source."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="Fetch the script from this https URL (e.g. a gist)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Default: from the file or directory.")
    ] = None,
    env: EnvFlag = None,
    secret: SecretFlag = None,
    private: Annotated[
        bool,
        typer.Option(
            "--private", help="Only your token or its invoke key (printed once) may call it."
        ),
    ] = False,
    idle_timeout: IdleFlag = None,
    delete_after: DeleteAfterFlag = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until it is ready.")] = True,
    timeout: TimeoutFlag = 300.0,
    as_json: JsonFlag = False,
) -> None:
    """Deploy a script: check it, send it, show its state until ready, print its URL."""
    if (script is None) == (source is None):
        _fail(Exit.USAGE, "give a script file or --source URL (one of them)")
    code = _read_script(script) if script is not None else None
    body: dict[str, Any] = {
        "user": _config(ctx).user or "nobody",  # checked for real by the client
        "name": name or (_default_name(script) if script is not None else "main"),
        "env": _parse_env(env) or {},
        "secrets": _parse_env(secret, "--secret") or {},
    }
    if code is not None:
        body["code"] = code
    else:
        body["source"] = {"url": source}
    if idle_timeout is not None:
        body["idle_timeout"] = idle_timeout
    if delete_after is not None:
        body["delete_after"] = delete_after
    _check(CreateRequest, body)

    async def work(client: Client) -> Function:
        extra: dict[str, Any] = {}
        if idle_timeout is not None:
            extra["idle_timeout"] = idle_timeout
        if delete_after is not None:
            extra["delete_after"] = delete_after
        fn = await client.create(
            code, source=source, name=body["name"], env=body["env"], secrets=body["secrets"],
            private=private, **extra,
        )  # fmt: skip
        err.print(f"deploying {fn.name} ({fn.id})", markup=False)
        _show_invoke_key(fn)
        if private and not fn.invoke_key:
            # A retry answered by the attempt that made the function: its key was in an
            # answer that never arrived.
            err.print(
                "this private function was made by an earlier attempt whose answer was lost, "
                f"with its invoke key; get a new key: faas update {fn.id} --rotate-key",
                markup=False,
            )
        if not wait:
            return fn
        with _Progress(fn.name) as progress:
            ready = await client.wait(fn.id, timeout=timeout, on_change=progress)
        # Only the create's answer has a private function's key: --json shows it, once.
        return ready.model_copy(update={"invoke_key": fn.invoke_key})

    fn = _run(ctx, work, as_json)
    print(_dump(fn) if as_json else fn.url)


@app.command()
def update(
    ctx: typer.Context,
    function: FunctionRef,
    script: Annotated[
        Path | None, typer.Argument(help="The new script; leave out to change settings only.")
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", help="K=V, repeatable: replaces the whole environment."),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option("--secret", "-s", help="K=V, repeatable: replaces every secret variable."),
    ] = None,
    private: Annotated[
        bool | None,
        typer.Option("--private/--public", help="Who may call it through the gateway."),
    ] = None,
    rotate_key: Annotated[
        bool, typer.Option("--rotate-key", help="Make a new invoke key (printed once).")
    ] = False,
    idle_timeout: IdleFlag = None,
    delete_after: DeleteAfterFlag = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the new generation serves.")
    ] = True,
    timeout: TimeoutFlag = 300.0,
    as_json: JsonFlag = False,
) -> None:
    """Roll out new code or settings. The URL stays; the old generation serves until the
    new one is ready, and keeps serving if the new one fails (exit 3)."""
    body: dict[str, Any] = {}
    if script is not None:
        body["code"] = _read_script(script)
    if env is not None:
        body["env"] = _parse_env(env)
    if secret is not None:
        body["secrets"] = _parse_env(secret, "--secret")
    if private is not None:
        body["visibility"] = "private" if private else "public"
    if rotate_key:
        body["rotate_invoke_key"] = True
    if idle_timeout is not None:
        body["idle_timeout"] = idle_timeout
    if delete_after is not None:
        body["delete_after"] = delete_after
    if not body:
        _fail(
            Exit.USAGE,
            "nothing to update: give a script, --env, --secret, --private/--public, "
            "--rotate-key, --idle-timeout or --delete-after",
        )
    _check(UpdateRequest, body)
    sdk_args = {k: v for k, v in body.items() if k != "visibility"}
    if private is not None:
        sdk_args["private"] = private

    async def work(client: Client) -> Function:
        fid = await _resolve(client, function)
        fn = await client.update(fid, **sdk_args)
        err.print(f"updating {fn.name} ({fn.id}) to generation {fn.generation}", markup=False)
        _show_invoke_key(fn)
        if not wait:
            return fn
        with _Progress(fn.name) as progress:
            return await client.wait(
                fid, generation=fn.generation, timeout=timeout, on_change=progress
            )

    fn = _run(ctx, work, as_json)
    print(_dump(fn) if as_json else fn.url)


@app.command("ls")
def list_functions(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Your functions, as a table."""

    async def work(client: Client) -> list[Function]:
        return await client.list_functions()

    functions = _run(ctx, work, as_json)
    if as_json:
        print(_dump(functions))
        return
    if not functions:
        err.print("no functions yet; start with:  faas init hello && faas deploy hello/main.py")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "STATE", "GEN", "URL"):
        table.add_column(column, no_wrap=True)
    for fn in functions:
        gen = f"{fn.observed_generation}/{fn.generation}"
        table.add_row(fn.id, fn.name, fn.state, gen, fn.url)
    out.print(table)


@app.command()
def get(ctx: typer.Context, function: FunctionRef, as_json: JsonFlag = False) -> None:
    """One function: its state, the reason for it, its URL and settings."""

    async def work(client: Client) -> Function:
        return await client.get(await _resolve(client, function))

    fn = _run(ctx, work, as_json)
    if as_json:
        print(_dump(fn))
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    env = ", ".join(f"{k}={v}" for k, v in sorted(fn.env.items())) or "-"
    secrets = ", ".join(f"{k}={v}" for k, v in sorted(fn.secrets.items())) or "-"
    idle = "never" if not fn.idle_timeout else f"{fn.idle_timeout}s"
    stale = "never" if not fn.delete_after else f"{fn.delete_after}s asleep"
    for key, value in (
        ("id", fn.id), ("name", fn.name), ("user", fn.user), ("state", fn.state),
        ("desired", fn.desired), ("generation", f"{fn.observed_generation}/{fn.generation}"),
        ("url", fn.url), ("visibility", fn.visibility), ("runtime", fn.runtime),
        ("env", env), ("secrets", secrets), ("idle timeout", idle), ("deleted after", stale),
        ("created", fn.created_at), ("updated", fn.updated_at),
    ):  # fmt: skip
        table.add_row(key, value)
    out.print(table)
    if fn.reason:
        out.print(f"\nreason:\n{fn.reason}", markup=False)


@app.command()
def logs(
    ctx: typer.Context,
    function: FunctionRef,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Go on printing new lines (Ctrl-C stops).")
    ] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", help="How many of the last lines.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON; with -f one object per line.")
    ] = False,
) -> None:
    """The function's log: what it prints, and pyfaas' notes on its starts."""

    async def work(client: Client) -> None:
        fid = await _resolve(client, function)
        if not follow:
            lines = await client.logs(fid, tail if tail is not None else 100)
            if as_json:
                print(json.dumps({"id": fid, "lines": lines}, indent=2))
            else:
                for line in lines:
                    print(line)
            return
        async for event in client.follow_logs(fid, tail if tail is not None else 10):
            if as_json:
                print(json.dumps({"event": event.kind, "text": event.text}), flush=True)
            elif event.kind == "line":
                print(event.text, flush=True)
            else:
                err.print(f"-- {event.text}", markup=False)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follow ends: exit 0
        _run(ctx, work, as_json)


@app.command()
def call(
    ctx: typer.Context,
    function: FunctionRef,
    path: Annotated[str, typer.Argument(help="Path under the function, e.g. api/items.")] = "",
    data: Annotated[
        str | None,
        typer.Option(
            "--data", "-d", help="Body to send (implies POST); @FILE reads a file, @- stdin."
        ),
    ] = None,
    method: Annotated[str | None, typer.Option("--request", "-X", help="HTTP method.")] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="'Name: value', repeatable.")
    ] = None,
    include: Annotated[
        bool, typer.Option("--include", "-i", help="Print the status and headers too.")
    ] = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="A private function's invoke key [PYFAAS_INVOKE_KEY].",
            envvar="PYFAAS_INVOKE_KEY",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {status, headers, body} as JSON.")
    ] = False,
) -> None:
    """Call the function through the gateway and print its answer (exit 1 if >= 400)."""
    body: bytes | None = None
    if data is not None:
        if data == "@-":
            body = sys.stdin.buffer.read()
        elif data.startswith("@"):
            try:
                body = Path(data[1:]).read_bytes()
            except OSError as exc:
                _fail(Exit.USAGE, f"--data {data}: {exc.strerror}")
        else:
            body = data.encode()
    headers: dict[str, str] = {}
    for h in header or []:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            _fail(Exit.USAGE, f"--header {h!r}: write 'Name: value'")
        headers[name.strip()] = value.strip()
    verb = (method or ("POST" if body is not None else "GET")).upper()

    async def work(client: Client) -> Any:
        fid = await _resolve(client, function)
        return await client.call(fid, path, method=verb, data=body, headers=headers, invoke_key=key)

    result = _run(ctx, work, as_json)
    if as_json:
        print(json.dumps(
            {"status": result.status, "headers": dict(result.headers), "body": result.text()},
            indent=2,
        ))  # fmt: skip
    else:
        if include:
            print(f"HTTP {result.status}")
            for name, value in result.headers.items():
                print(f"{name}: {value}")
            print()
        sys.stdout.flush()
        sys.stdout.buffer.write(result.body)
        if result.body and not result.body.endswith(b"\n") and sys.stdout.isatty():
            sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
    if result.status >= 400:
        raise typer.Exit(Exit.API_ERROR)


@app.command()
def rm(
    ctx: typer.Context,
    function: FunctionRef,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until it is gone.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Delete a function: it stops serving at once and its URL answers 404."""

    async def work(client: Client) -> Function:
        fid = await _resolve(client, function)
        fn = await client.delete(fid)
        if wait:
            await client.wait_deleted(fid)
        return fn

    fn = _run(ctx, work, as_json)
    if as_json:
        print(_dump(fn))
    else:
        err.print(f"deleted {fn.name} ({fn.id})", markup=False)


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="Whose token: its sub, a user name.")],
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin token: sees every user's functions.")
    ] = False,
    ttl: Annotated[float, typer.Option("--ttl", help="Seconds the token is valid (7 days).")] = 7
    * 24
    * 3600,
) -> None:
    """Mint a token (HS256) with PYFAAS_JWT_SECRET, for local use: export it as
    PYFAAS_TOKEN. Production tokens come from your identity provider."""
    if not NAME_RE.match(user):
        _fail(Exit.USAGE, f"{user!r} is not a valid user name: 1-63 of a-z, 0-9 and '-'")
    try:
        settings = AuthSettings(auth="jwt")
        minted = Authenticator(settings).mint(user, admin=admin, ttl=ttl)
    except ValidationError as exc:
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        _fail(Exit.USAGE, f"cannot mint a token: {reasons}")
    except RuntimeError as exc:
        _fail(Exit.USAGE, f"cannot mint a token: {exc}")
    print(minted)


@app.command()
def dev() -> None:
    """Run the whole platform on this machine (NATS, API, deployer, gateway, reaper)."""
    from .dev import run_dev

    raise typer.Exit(run_dev())


def main() -> None:
    app(prog_name="faas")


if __name__ == "__main__":
    main()
