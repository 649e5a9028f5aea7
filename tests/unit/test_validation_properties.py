"""Properties of the PEP 723 validator (``pyfaas_common.validation``), checked by
hypothesis: whatever text arrives, the validator either returns the metadata or raises
:class:`InvalidScript` with messages naming the field — never anything else — and a
well-formed script's metadata comes back exactly as written."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyfaas_common.validation import (
    NAME_RE,
    InvalidScript,
    check_env,
    check_name,
    parse_script,
)

FAST = settings(max_examples=300, deadline=None, database=None)
VERSIONS = ["3.11.9", "3.12.4"]

_REQUIREMENTS = st.sampled_from(
    ["httpx", "httpx>=0.27", "aiohttp==3.10.5", "requests[socks]>=2,<3", "mcp>=1.9",
     'tomli; python_version < "3.11"', "pydantic-core~=2.0", "a-b.c_d"]
)  # fmt: skip
_SPECIFIERS = st.sampled_from([">=3.11", ">=3.8,<4", "~=3.12", "==3.11.*", "!=3.10"])


def _script(meta: str, body: str = "print('hi')\n") -> str:
    commented = "".join(f"# {line}\n" if line else "#\n" for line in meta.splitlines())
    return f"# /// script\n{commented}# ///\n{body}"


def _must_refuse_or_parse(code: str) -> None:
    try:
        parse_script(code, VERSIONS)
    except InvalidScript as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.field == "code"
            assert error.message.strip()


@FAST
@given(code=st.text(max_size=400))
def test_any_text_is_parsed_or_refused_with_a_reason(code: str) -> None:
    _must_refuse_or_parse(code)


@FAST
@given(meta=st.text(max_size=200), body=st.text(max_size=100))
def test_any_metadata_block_is_parsed_or_refused_with_a_reason(meta: str, body: str) -> None:
    _must_refuse_or_parse(_script(meta, body))


@FAST
@given(
    deps=st.lists(_REQUIREMENTS, max_size=5),
    requires=st.one_of(st.none(), _SPECIFIERS),
    extra_tool=st.booleans(),
)
def test_a_well_formed_block_comes_back_as_written(
    deps: list[str], requires: str | None, extra_tool: bool
) -> None:
    lines = [f"dependencies = {json.dumps(deps)}"]
    if requires is not None:
        lines.insert(0, f"requires-python = {json.dumps(requires)}")
    if extra_tool:
        lines.append('[tool.pyfaas]\ncpu = "2"')
    try:
        meta = parse_script(_script("\n".join(lines)), VERSIONS)
    except InvalidScript as exc:  # only a requires-python this platform cannot run
        assert requires is not None and "cannot be satisfied" in str(exc)
        return
    assert meta.dependencies == deps
    assert meta.requires_python == requires


@FAST
@given(deps=st.lists(st.text(max_size=30), min_size=1, max_size=4))
def test_arbitrary_dependency_strings_are_checked_one_by_one(deps: list[str]) -> None:
    code = _script(f"dependencies = {json.dumps(deps)}")
    try:
        meta = parse_script(code, VERSIONS)
    except InvalidScript as exc:
        # Each refusal names the dependency it is about, or the block as a whole.
        for error in exc.errors:
            assert "dependency" in error.message or "TOML" in error.message
    else:
        assert meta.dependencies == deps


_LABELS = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)


@FAST
@given(
    name=st.one_of(
        st.text(max_size=70),
        _LABELS,
        st.tuples(_LABELS, st.sampled_from(["\n", " ", "\t", "-", "\r\n"])).map("".join),
    )
)
def test_names_are_dns_labels_exactly(name: str) -> None:
    ascii_label = (
        0 < len(name) <= 63
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in name)
        and name[0] != "-"
        and name[-1] != "-"
    )
    if ascii_label:
        assert check_name(name, "name") == name
    else:
        with pytest.raises(ValueError, match="not a valid name"):
            check_name(name, "name")
    assert bool(NAME_RE.match(name)) == ascii_label


@FAST
@given(
    env=st.dictionaries(
        st.one_of(st.text(max_size=20), st.from_regex(r"[A-Z_]{1,8}\n?", fullmatch=True)),
        st.text(max_size=20),
        max_size=10,
    )
)
def test_env_names_are_variable_names_exactly(env: dict[str, str]) -> None:
    def variable_name(k: str) -> bool:
        return (
            0 < len(k) <= 128
            and all(c.isascii() and (c.isalnum() or c == "_") for c in k)
            and not k[0].isdigit()
        )

    reserved = {"PORT", "HOST", "PATH", "HOME", "UV_CACHE_DIR", "PYTHONPATH"}
    acceptable = all(
        variable_name(k) and k not in reserved and not k.startswith("PYFAAS_") for k in env
    )
    try:
        assert check_env(env) == env
    except ValueError as exc:
        assert str(exc)
        if acceptable:  # then refused for its size only
            assert "bytes" in str(exc)
    else:
        assert acceptable
