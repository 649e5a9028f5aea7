"""The CLI's and the SDK's parts that need no platform: configuration precedence, the
templates ``faas init`` writes, problem documents turned into messages (no I/O beyond a
temporary config file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyfaas.cli import _default_name
from pyfaas.client import problem_from
from pyfaas.config import Config, ConfigError
from pyfaas.templates import TEMPLATES, render
from pyfaas_common.validation import parse_script


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in ("PYFAAS_API_URL", "PYFAAS_GATEWAY_URL", "PYFAAS_USER", "PYFAAS_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_flags_beat_the_environment_which_beats_the_file(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('api_url = "http://file:1/"\nuser = "fromfile"\ntoken = "t-file"\n')
    clean_env.setenv("PYFAAS_USER", "fromenv")
    config = Config.load(path=path, token="t-flag")
    assert config == Config(api_url="http://file:1", user="fromenv", token="t-flag")


def test_defaults_reach_faas_dev(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    config = Config.load(path=tmp_path / "absent.toml", user="alice")
    assert (config.api_url, config.gateway_url, config.token) == ("http://127.0.0.1:8000", "", "")


@pytest.mark.parametrize(
    ("content", "says"),
    [("api_url = 1\n", "must be a string"), ("colour = 'red'\n", "unknown keys colour"),
     ("api_url = \n", "not valid TOML")],
)  # fmt: skip
def test_a_bad_config_file_says_what_to_fix(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, content: str, says: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=says):
        Config.load(path=path)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_is_a_valid_function(template: str) -> None:
    code = render(template, "hello")
    compile(code, "main.py", "exec")
    parse_script(code)  # PEP 723 metadata the platform accepts


@pytest.mark.parametrize(
    ("path", "name"),
    [("hello.py", "hello"), ("hello/main.py", "hello"), ("My_App/main.py", "my-app")],
)
def test_the_default_name_comes_from_the_file_or_its_directory(path: str, name: str) -> None:
    assert _default_name(Path(path)) == name


def test_problem_documents_become_their_human_message() -> None:
    doc = {"type": "https://pyfaas.dev/problems/not-found", "title": "Not found",
           "status": 404, "detail": "no function with id x"}  # fmt: skip
    error = problem_from(404, "application/problem+json", json.dumps(doc).encode())
    assert str(error) == "Not found: no function with id x"
    assert error.status == 404 and error.problem["type"] == doc["type"]
    plain = problem_from(502, "text/html", b"<h1>Bad Gateway</h1>")
    assert plain.status == 502 and "Bad Gateway" in str(plain)


def test_faas_token_mints_a_token_the_platform_accepts(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from pyfaas.cli import app
    from pyfaas_common.auth import Authenticator, AuthSettings, Identity

    secret = "t" * 48
    clean_env.delenv("PYFAAS_JWT_SECRET", raising=False)
    runner = CliRunner()
    missing = runner.invoke(app, ["token", "alice"])
    assert missing.exit_code == 2 and "PYFAAS_JWT_SECRET" in missing.output
    clean_env.setenv("PYFAAS_JWT_SECRET", secret)
    minted = runner.invoke(app, ["token", "alice", "--admin"])
    assert minted.exit_code == 0, minted.output
    token = minted.output.strip()
    auth = Authenticator(AuthSettings(auth="jwt", jwt_secret=secret))
    assert auth.identify(f"Bearer {token}") == Identity("alice", admin=True)
    # Without a user of its own, the CLI acts as the token's user.
    config = Config.load(path=tmp_path / "absent.toml", token=token)
    assert config.user == "alice"
