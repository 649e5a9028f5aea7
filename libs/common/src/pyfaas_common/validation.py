"""Checks on what a user sends, shared by the API and the CLI so both refuse the same way.

A user script must be one UTF-8 Python file of at most 512 KiB with a PEP 723
``# /// script`` block whose TOML has valid PEP 508 ``dependencies`` and a
``requires-python`` this platform can satisfy. Every refusal names the field and says what
to change; a syntax error gives its line and column.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from .problems import FieldError

MAX_SCRIPT_BYTES = 512 * 1024
"""A ConfigMap holds at most 1 MiB; half of it leaves room for metadata and the env."""

MAX_ENV_BYTES = 64 * 1024
MAX_ENV_ENTRIES = 100

# \Z, not $: "$" also matches before a final newline, and "alice\n" is not a name.
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
NAME_RULE = (
    "use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit "
    "(a DNS label)"
)
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
RESERVED_ENV = {"PORT", "HOST", "PATH", "HOME", "UV_CACHE_DIR", "PYTHONPATH"}

# PEP 723's reference regular expression.
_BLOCK_RE = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


@dataclass(frozen=True, slots=True)
class ScriptMetadata:
    dependencies: list[str] = field(default_factory=list)
    requires_python: str | None = None


class InvalidScript(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def default_python_versions() -> list[str]:
    return ["{}.{}.{}".format(*sys.version_info[:3])]


def check_name(value: str, field_name: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid {field_name}: {NAME_RULE}")
    return value


def check_env(env: dict[str, str]) -> dict[str, str]:
    if len(env) > MAX_ENV_ENTRIES:
        raise ValueError(f"at most {MAX_ENV_ENTRIES} variables are allowed, got {len(env)}")
    size = 0
    for key, value in env.items():
        if not ENV_KEY_RE.match(key):
            raise ValueError(
                f"{key!r} is not a valid variable name: use letters, digits and '_', "
                "not starting with a digit"
            )
        if key in RESERVED_ENV or key.startswith("PYFAAS_"):
            raise ValueError(f"{key!r} is set by pyfaas itself; choose another name")
        size += len(key.encode()) + len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ENV_BYTES:
        raise ValueError(f"the environment is {size} bytes; the limit is {MAX_ENV_BYTES}")
    return env


def env_size(*maps: dict[str, str]) -> int:
    """Bytes of names and values, as :func:`check_env` counts them."""
    return sum(
        len(k.encode()) + len(v.encode("utf-8", "surrogatepass"))
        for m in maps
        for k, v in m.items()
    )


def check_env_and_secrets(env: dict[str, str], secrets: dict[str, str]) -> None:
    """Plain and secret variables together: no name twice, and the limits hold for both."""
    both = sorted(set(env) & set(secrets))
    if both:
        raise ValueError(
            f"{', '.join(map(repr, both))} is both in env and in secrets; keep each name in one"
        )
    if len(env) + len(secrets) > MAX_ENV_ENTRIES:
        raise ValueError(
            f"at most {MAX_ENV_ENTRIES} variables are allowed (env and secrets together), "
            f"got {len(env) + len(secrets)}"
        )
    size = env_size(env, secrets)
    if size > MAX_ENV_BYTES:
        raise ValueError(f"env and secrets are {size} bytes together; the limit is {MAX_ENV_BYTES}")


def _metadata_block(code: str) -> str | None:
    blocks = [m for m in _BLOCK_RE.finditer(code) if m.group("type") == "script"]
    if len(blocks) > 1:
        raise InvalidScript(
            [FieldError("code", "has more than one '# /// script' block; keep exactly one")]
        )
    if not blocks:
        return None
    content = blocks[0].group("content")
    return "".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in content.splitlines(keepends=True)
    )


def parse_script(code: str, python_versions: Sequence[str] | None = None) -> ScriptMetadata:
    """Return the script's PEP 723 metadata, or raise :class:`InvalidScript`."""
    try:
        raw = code.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidScript(
            [FieldError("code", f"is not valid UTF-8 (at character {exc.start})")]
        ) from None
    if len(raw) > MAX_SCRIPT_BYTES:
        raise InvalidScript(
            [
                FieldError(
                    "code",
                    f"is {len(raw)} bytes; the limit is {MAX_SCRIPT_BYTES} bytes (512 KiB). "
                    "Move data out of the script or fetch it at start-up",
                )
            ]
        )
    if "\x00" in code:
        raise InvalidScript([FieldError("code", "contains a NUL byte; send Python source text")])
    try:
        ast.parse(code, filename="main.py")
    except SyntaxError as exc:
        raise InvalidScript(
            [
                FieldError(
                    "code",
                    f"is not valid Python: {exc.msg} at line {exc.lineno}, column {exc.offset}",
                )
            ]
        ) from None

    block = _metadata_block(code)
    if block is None:
        raise InvalidScript(
            [
                FieldError(
                    "code",
                    "has no PEP 723 metadata block; start the script with\n"
                    '# /// script\n# requires-python = ">=3.11"\n# dependencies = []\n# ///',
                )
            ]
        )
    try:
        meta = tomllib.loads(block)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidScript(
            [FieldError("code", f"its '# /// script' block is not valid TOML: {exc}")]
        ) from None

    errors: list[FieldError] = []
    deps = meta.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        errors.append(
            FieldError("code", "'dependencies' must be a list of strings, e.g. [\"httpx>=0.27\"]")
        )
        deps = []
    for dep in deps:
        try:
            Requirement(dep)
        except InvalidRequirement as exc:
            errors.append(
                FieldError("code", f"dependency {dep!r} is not a valid PEP 508 requirement: {exc}")
            )

    requires_python = meta.get("requires-python")
    if requires_python is not None:
        if not isinstance(requires_python, str):
            errors.append(FieldError("code", "'requires-python' must be a string like \">=3.11\""))
        else:
            try:
                spec = SpecifierSet(requires_python)
            except InvalidSpecifier:
                errors.append(
                    FieldError(
                        "code",
                        f"'requires-python' {requires_python!r} is not a valid version "
                        'specifier; write e.g. ">=3.11"',
                    )
                )
            else:
                versions = list(python_versions or default_python_versions())
                if not any(spec.contains(Version(v), prereleases=True) for v in versions):
                    errors.append(
                        FieldError(
                            "code",
                            f"'requires-python' {requires_python!r} cannot be satisfied here: "
                            f"this platform runs Python {', '.join(versions)}",
                        )
                    )
    if errors:
        raise InvalidScript(errors)
    return ScriptMetadata(dependencies=list(deps), requires_python=requires_python)
