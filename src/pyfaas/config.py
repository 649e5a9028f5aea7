"""Where the ``faas`` CLI and the SDK find the platform and who they are.

Each value comes from the first of: a flag (or an argument to :meth:`Config.load`), the
environment (``PYFAAS_API_URL``, ``PYFAAS_GATEWAY_URL``, ``PYFAAS_USER``,
``PYFAAS_TOKEN``), the config file (``$PYFAAS_CONFIG``, else
``$XDG_CONFIG_HOME/pyfaas/config.toml``, else ``~/.config/pyfaas/config.toml``), and a
default that reaches ``faas dev`` on this machine. The config file is flat TOML::

    api_url = "https://faas.example.com"
    gateway_url = "https://faas.example.com"
    user = "alice"
    token = "..."
"""

from __future__ import annotations

import getpass
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import jwt

from pyfaas_common.validation import NAME_RE

DEFAULT_API_URL = "http://127.0.0.1:8000"

_ENV = {
    "api_url": "PYFAAS_API_URL",
    "gateway_url": "PYFAAS_GATEWAY_URL",
    "user": "PYFAAS_USER",
    "token": "PYFAAS_TOKEN",
}


class ConfigError(ValueError):
    """The config file cannot be used; the message says what to fix."""


def config_path() -> Path:
    if explicit := os.environ.get("PYFAAS_CONFIG"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pyfaas" / "config.toml"


def _token_user(token: str) -> str:
    """The user a token names (read, not verified: the API verifies it), or ''."""
    if not token:
        return ""
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.InvalidTokenError:
        return ""
    return sub if isinstance(sub, str) and NAME_RE.match(sub) else ""


def _default_user() -> str:
    """The login name, when it is a valid pyfaas user name; else none (the user must say)."""
    try:
        login = getpass.getuser().lower()
    except (OSError, KeyError):
        return ""
    return login if NAME_RE.match(login) else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    api_url: str = DEFAULT_API_URL
    """The pyfaas API (``faas dev`` serves it on port 8000)."""

    gateway_url: str = ""
    """The gateway, for ``faas call``; empty: the URL the API gives each function."""

    user: str = ""
    """Whose functions these are; empty: the token's user, else the login name (if it is
    a valid user name)."""

    token: str = ""
    """Sent as ``Authorization: Bearer``; empty: no header."""

    @classmethod
    def load(
        cls,
        *,
        api_url: str | None = None,
        gateway_url: str | None = None,
        user: str | None = None,
        token: str | None = None,
        path: Path | None = None,
    ) -> Config:
        flags = {"api_url": api_url, "gateway_url": gateway_url, "user": user, "token": token}
        from_file = _read_file(path or config_path())
        values: dict[str, str] = {}
        for f in fields(cls):
            for candidate in (flags[f.name], os.environ.get(_ENV[f.name]), from_file.get(f.name)):
                if candidate is not None:
                    values[f.name] = candidate
                    break
        config = cls(**values)
        return cls(
            api_url=config.api_url.rstrip("/") or DEFAULT_API_URL,
            gateway_url=config.gateway_url.rstrip("/"),
            user=config.user or _token_user(config.token) or _default_user(),
            token=config.token,
        )


def _read_file(path: Path) -> dict[str, str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from None
    known = set(_ENV)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"the config file {path} has unknown keys {', '.join(unknown)}; "
            f"the keys are {', '.join(sorted(known))}"
        )
    for key, value in data.items():
        if not isinstance(value, str):
            raise ConfigError(f"in the config file {path}, {key} must be a string")
    return dict(data)
