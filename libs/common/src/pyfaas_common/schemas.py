"""The bodies users send to the HTTP API, as pydantic models.

The API validates requests with them and generates its OpenAPI document from them, so the
two can never disagree; the CLI validates with them before it sends anything.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .validation import (
    InvalidScript,
    check_env,
    check_env_and_secrets,
    check_name,
    parse_script,
)

UserName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        description="Owner of the function: 1-63 lowercase letters, digits or '-', "
        "starting and ending with a letter or digit.",
        examples=["alice"],
    ),
    AfterValidator(lambda v: check_name(v, "user")),
]
FunctionName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        description="A name for people; same format as user. Defaults to 'main'.",
        examples=["hello"],
    ),
    AfterValidator(lambda v: check_name(v, "name")),
]
Env = Annotated[
    dict[str, str],
    Field(
        description="Environment variables for the function (PORT and PYFAAS_* are reserved).",
        examples=[{"GREETING": "hello"}],
    ),
    AfterValidator(check_env),
]
Secrets = Annotated[
    dict[str, str],
    Field(
        description="Environment variables whose values are secret: set in the function's "
        "environment like env, but never returned (list and get show each name with the "
        "value '********'), kept in a Kubernetes Secret, and redacted from pyfaas' logs and "
        "from the function's log lines. Names follow the rules of env and may not repeat one.",
        examples=[{"API_TOKEN": "s3cr3t"}],
    ),
    AfterValidator(check_env),
]
VisibilityField = Annotated[
    Literal["public", "private"],
    Field(
        description="public: anyone may call the function through the gateway. private: "
        "only its owner's token (or an admin's) or its invoke key "
        "(X-Pyfaas-Invoke-Key header) may.",
    ),
]
IdleTimeout = Annotated[
    int | None,
    Field(
        ge=0,
        le=30 * 24 * 3600,
        description="Seconds without a request before the function is put to sleep; "
        "0 or null means never. Defaults to PYFAAS_IDLE_TIMEOUT.",
    ),
]
DeleteAfter = Annotated[
    int | None,
    Field(
        ge=0,
        le=366 * 24 * 3600,
        description="Seconds asleep before the function is deleted; 0 or null means never. "
        "Defaults to PYFAAS_DELETE_AFTER.",
    ),
]
Code = Annotated[
    str,
    Field(
        min_length=1,
        description="The whole Python script, with a PEP 723 '# /// script' block; it must "
        "serve HTTP on 0.0.0.0:$PORT.",
    ),
]


def _check_code(code: str, info: ValidationInfo) -> str:
    versions = (info.context or {}).get("python_versions")
    try:
        parse_script(code, versions)
    except InvalidScript as exc:
        raise ValueError("; ".join(e.message for e in exc.errors)) from None
    return code


def _check_env_and_secrets(env: dict[str, str], secrets: dict[str, str]) -> None:
    try:
        check_env_and_secrets(env, secrets)
    except ValueError as exc:
        raise ValueError(f"@secrets {exc}") from None


class Source(BaseModel):
    """Where to fetch the script from, instead of sending it as ``code``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="An https URL of the script (a GitHub gist page becomes its raw file). "
        "pyfaas fetches it once, at create, from public addresses only (unless the operator "
        "allows a host), and validates it like inline code.",
        examples=["https://gist.github.com/alice/0123abcd"],
    )


class CreateRequest(BaseModel):
    """``POST /faas/python``"""

    model_config = ConfigDict(extra="forbid")

    user: UserName | None = Field(
        default=None,
        description="Owner of the function: 1-63 lowercase letters, digits or '-'. With "
        "PYFAAS_AUTH=jwt it defaults to the token's user (and must equal it unless the token "
        "is an admin's); with PYFAAS_AUTH=none it is required.",
        examples=["alice"],
    )
    name: FunctionName = "main"
    code: Code | None = Field(
        default=None,
        min_length=1,
        description="The whole Python script, with a PEP 723 '# /// script' block; it must "
        "serve HTTP on 0.0.0.0:$PORT. Exactly one of code and source.",
    )
    source: Source | None = Field(
        default=None,
        description="Fetch the script from a URL instead; exactly one of code and source.",
    )
    env: Env = Field(default_factory=dict)
    secrets: Secrets = Field(default_factory=dict)
    visibility: VisibilityField = "public"
    idle_timeout: IdleTimeout = None
    delete_after: DeleteAfter = None

    @field_validator("code")
    @classmethod
    def _code_ok(cls, code: str | None, info: ValidationInfo) -> str | None:
        return None if code is None else _check_code(code, info)

    @model_validator(mode="after")
    def _one_source_and_distinct_names(self) -> CreateRequest:
        if self.code is None and self.source is None:
            raise ValueError('@code is required: send the script as code, or source: {"url": ...}')
        if self.code is not None and self.source is not None:
            raise ValueError("@source send either code or source, not both")
        _check_env_and_secrets(self.env, self.secrets)
        return self


class UpdateRequest(BaseModel):
    """``PUT /faas/python/{id}``: fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    code: Code | None = None
    env: Env | None = Field(default=None, description="Replaces the whole plain environment.")
    secrets: Secrets | None = Field(
        default=None, description="Replaces every secret variable (send all you keep)."
    )
    visibility: VisibilityField | None = None
    rotate_invoke_key: bool = Field(
        default=False,
        description="Make a new invoke key (answered once as invoke_key); the old one stops "
        "working. A function made private that has no key gets one without asking.",
    )
    idle_timeout: IdleTimeout = None
    delete_after: DeleteAfter = None

    @field_validator("code")
    @classmethod
    def _code_ok(cls, code: str | None, info: ValidationInfo) -> str | None:
        return None if code is None else _check_code(code, info)

    @model_validator(mode="after")
    def _distinct_names(self) -> UpdateRequest:
        _check_env_and_secrets(self.env or {}, self.secrets or {})
        return self

    def is_empty(self) -> bool:
        return not self.model_fields_set


class ListRequest(BaseModel):
    """The design notes' ``GET /faas/python {"user": "foo"}`` body."""

    model_config = ConfigDict(extra="forbid")

    user: UserName | None = Field(
        default=None,
        description="Whose functions. With PYFAAS_AUTH=jwt it defaults to the token's user; "
        "an admin who leaves it out sees every user's. Required with PYFAAS_AUTH=none.",
    )


def field_errors(exc: Any) -> list[tuple[str, str]]:
    """(field, message) pairs from a pydantic ValidationError, in words a person acts on."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "is not a known field; remove it (see /openapi.json)"
        elif err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "string_unicode":
            msg = "is not valid UTF-8 text (it holds a lone surrogate); send it as UTF-8"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if msg.startswith("@"):  # a model check naming its field: "@field message"
            loc, _, msg = msg[1:].partition(" ")
        out.append((loc, msg))
    return out


class FunctionResource(BaseModel):
    """A function as the API returns it."""

    id: str = Field(description="The function's id (a UUID); also the path under the gateway.")
    user: str
    name: str
    state: str = Field(
        description="pending, deploying, ready, failed, sleeping, deleting or deleted",
        examples=["ready"],
    )
    desired: str = Field(description="running, sleeping or deleted")
    reason: str = Field(description="Why the function is in its state, in words; '' if fine.")
    url: str = Field(description="Where to call it: the gateway's address for this function.")
    generation: int = Field(description="Bumped by every change a user or the reaper asks for.")
    observed_generation: int = Field(description="The generation the state describes.")
    runtime: str
    env: dict[str, str]
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="The secret variables: each name with the value '********', never the value.",
    )
    visibility: str = Field(default="public", description="public or private")
    invoke_key: str | None = Field(
        default=None,
        description="Only in the answer that made it (a private function's create, or an "
        "update that rotated it): the key that calls the private function in the "
        "X-Pyfaas-Invoke-Key header. pyfaas keeps only its hash: store it now.",
    )
    idle_timeout: int | None = Field(description="Seconds of idleness before sleep; 0: never.")
    delete_after: int | None = Field(description="Seconds asleep before deletion; 0: never.")
    created_at: str
    updated_at: str


class FunctionList(BaseModel):
    functions: list[FunctionResource]


class FunctionLogs(BaseModel):
    id: str
    lines: list[str]


class ProblemField(BaseModel):
    field: str = Field(examples=["code"])
    message: str = Field(examples=["is not valid Python: invalid syntax at line 3, column 5"])


class ProblemDetail(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str = Field(description="What went wrong and what to do about it.")
    instance: str | None = None
    errors: list[ProblemField] | None = Field(
        default=None, description="For invalid requests: each field and what to change."
    )
