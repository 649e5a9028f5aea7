"""The PEP 723 checks the API and the CLI share (no I/O)."""

from __future__ import annotations

import pytest

from pyfaas_common.validation import InvalidScript, check_env, check_name, parse_script
from tests.platform import example, script


def _refusal(code: str, versions: list[str] | None = None) -> str:
    with pytest.raises(InvalidScript) as caught:
        parse_script(code, versions)
    [error] = caught.value.errors
    assert error.field == "code"
    return error.message


def test_the_examples_are_valid() -> None:
    for name in ("hello_stdlib.py", "hello_aiohttp.py"):
        parse_script(example(name))


def test_metadata_is_returned() -> None:
    meta = parse_script(script("print(1)\n", dependencies=["httpx>=0.27", "rich"]))
    assert meta.dependencies == ["httpx>=0.27", "rich"]
    assert meta.requires_python == ">=3.11"


def test_a_script_without_a_block_is_told_how_to_write_one() -> None:
    assert "# /// script" in _refusal("print('hi')\n")


def test_two_blocks_are_refused() -> None:
    block = "# /// script\n# dependencies = []\n# ///\n"
    assert "more than one" in _refusal(block + "x = 1\n" + block)


def test_a_syntax_error_gives_line_and_column() -> None:
    message = _refusal(script("x = (1,\n"))
    assert "line 5" in message and "column" in message


def test_requires_python_is_checked_against_the_platforms_versions() -> None:
    code = script("", requires_python=">=3.12")
    assert "this platform runs Python 3.11.9" in _refusal(code, ["3.11.9"])
    parse_script(code, ["3.11.9", "3.12.4"])


def test_dependencies_must_be_strings() -> None:
    assert "list of strings" in _refusal("# /// script\n# dependencies = [1]\n# ///\n")


def test_nul_bytes_are_refused() -> None:
    assert "NUL" in _refusal(script("x = 1\x00\n"))


@pytest.mark.parametrize("name", ["a", "hello-world", "x1", "a" * 63])
def test_good_names(name: str) -> None:
    assert check_name(name, "name") == name


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a_b", "a.b", "a" * 64, "ü"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="DNS label"):
        check_name(name, "name")


def test_env_limits() -> None:
    assert check_env({"GREETING": "hi"}) == {"GREETING": "hi"}
    for bad in ({"PYFAAS_X": "1"}, {"HOME": "/"}, {"A-B": "1"}, {"X": "y" * 70_000}):
        with pytest.raises(ValueError):
            check_env(bad)
