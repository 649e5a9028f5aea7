"""Names and documents other parts rely on: subjects and streams, settings, the OpenAPI
document (no I/O)."""

from __future__ import annotations

import uuid

import pytest
from openapi_spec_validator import validate
from pydantic import ValidationError

from pyfaas_api.openapi import openapi_document
from pyfaas_common.settings import PlatformSettings, normalise_database_url
from pyfaas_common.subjects import Subjects


def test_every_subject_and_stream_starts_with_the_prefix() -> None:
    s = Subjects("blue")
    fid = uuid.uuid4()
    assert s.command("create", fid) == f"blue.cmd.create.{fid}"
    assert s.event(fid, "ready") == f"blue.event.{fid}.ready"
    assert s.access(fid) == f"blue.access.{fid}"
    assert s.query("get") == "blue.query.get"
    assert (s.command_stream, s.event_stream, s.access_stream) == (
        "BLUE_CMD",
        "BLUE_EVENT",
        "BLUE_ACCESS",
    )


# "a-b" too: its stream names would be those of "a_b" (stream names cannot hold "-").
@pytest.mark.parametrize("prefix", ["", "Faas", "a.b", "a b", "a>", "1abc", "a-b"])
def test_a_prefix_that_is_not_a_subject_token_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="PYFAAS_NATS_PREFIX"):
        PlatformSettings(nats_prefix=prefix)


def test_database_urls_get_the_async_driver(tmp_path: object) -> None:
    assert normalise_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalise_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    settings = PlatformSettings(data_dir=tmp_path)  # type: ignore[arg-type]
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.resolved_database_url.endswith("/pyfaas.db")


def test_settings_come_from_pyfaas_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYFAAS_NATS_PREFIX", "green")
    monkeypatch.setenv("PYFAAS_PUBLIC_URL", "https://faas.example.com/")
    settings = PlatformSettings()
    assert settings.nats_prefix == "green"
    assert settings.function_url("abc") == "https://faas.example.com/gateway/abc/"


def test_the_openapi_document_is_valid_and_matches_the_models() -> None:
    doc = openapi_document()
    validate(doc)
    create = doc["components"]["schemas"]["CreateRequest"]
    assert set(create["properties"]) == {
        "user",
        "name",
        "code",
        "source",
        "env",
        "secrets",
        "visibility",
        "idle_timeout",
        "delete_after",
    }
    assert create["additionalProperties"] is False
    # user: from the token when auth is on; code or source: checked by the model.
    assert set(create.get("required", [])) == set()
    resource = doc["components"]["schemas"]["FunctionResource"]["properties"]
    assert {"secrets", "visibility", "invoke_key"} <= set(resource)
    assert "invoke_key_hash" not in resource and "endpoint" not in resource
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    post = doc["paths"]["/faas/python"]["post"]["responses"]
    assert {"401", "403", "422", "429"} <= set(post)
    # Every operation the API serves is in the document, and nothing else is.
    from pyfaas_api.app import init_app
    from pyfaas_api.settings import ApiSettings

    served = {
        (route.resource.canonical, route.method.lower())
        for route in init_app(ApiSettings()).router.routes()
        if route.method != "HEAD" and route.resource is not None
    } - {("/openapi.json", "get")}
    documented = {
        (path, method)
        for path, ops in doc["paths"].items()
        for method in ops
        if method != "parameters"
    }
    assert documented == served


def test_every_setting_is_documented_for_operators() -> None:
    # An operator finds every PYFAAS_* variable in README.md or docs/; a table may
    # shorten a family to `PYFAAS_KUBERNETES_CPU_LIMIT` / `_MEMORY_LIMIT`.
    from pathlib import Path

    from pyfaas_api.settings import ApiSettings
    from pyfaas_deployer.settings import DeployerSettings
    from pyfaas_gateway.settings import GatewaySettings
    from pyfaas_reaper.settings import ReaperSettings

    root = Path(__file__).resolve().parents[2]
    lines = [
        line
        for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
        for line in doc.read_text().splitlines()
    ]
    text = "\n".join(lines)

    def documented(env: str) -> bool:
        if f"`{env}`" in text:
            return True
        parts = env.split("_")
        return any(
            f"`{'_'.join(parts[:i])}_" in line and f"`_{'_'.join(parts[i:])}`" in line
            for i in range(2, len(parts))
            for line in lines
        )

    settings = (ApiSettings, DeployerSettings, GatewaySettings, ReaperSettings)
    names = {f"PYFAAS_{name.upper()}" for cls in settings for name in cls.model_fields}
    assert sorted(env for env in names if not documented(env)) == []
