"""Creates that can be retried safely: the ``Idempotency-Key`` request header.

A create answered 503 because JetStream did not acknowledge the command in time may still
have been stored, and then it is carried out. A client that retries it would make a
second function — unless it sent ``Idempotency-Key`` (any unique string, a UUID say). The
key and the user name the function (a UUIDv5) and its create command (whose id is the
``Nats-Msg-Id`` JetStream de-duplicates on), so every retry carries the same command: the
deployer applies it once. A retry that finds the function already known (pending or
further) is answered with that function, and with ``Idempotent-Replayed: true``.
"""

from __future__ import annotations

import hashlib
import json
import re
from uuid import UUID, uuid5

from aiohttp import web
from pydantic import BaseModel

from pyfaas_common.messages import FunctionView, State
from pyfaas_common.problems import FieldError, Problem, invalid

from .keys import DEPLOYER

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_NAMESPACE = UUID("8d3c1f0e-6a57-4d0b-9a51-1b0f4f5c2e77")
_KEY = re.compile(r"[\x21-\x7e]{1,255}\Z")


def key_of(request: web.Request) -> str | None:
    """The request's key, or None; a malformed one is a 400 that says what a key is."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not _KEY.match(raw):
        raise invalid(
            [FieldError(HEADER, "must be 1-255 visible ASCII characters (a UUID is fine)")],
            status=400,
        )
    return raw


def ids_for(owner: str, key: str) -> tuple[UUID, UUID]:
    """The function id and the create command's id that ``owner``'s ``key`` stands for."""
    name = f"{owner}\n{key}"
    return uuid5(_NAMESPACE, name), uuid5(_NAMESPACE, name + "\ncreate")


def digest(owner: str, body: BaseModel) -> str:
    """What a retry must repeat: the user and the create request as validated."""
    canonical = json.dumps(
        [owner, body.model_dump(mode="json", exclude_unset=True)], sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def earlier_create(
    request: web.Request, function_id: UUID, request_digest: str | None, *, must_know: bool
) -> FunctionView | None:
    """The function an earlier create with this key made, if the deployer knows it; 422
    when that create was another request (the key was reused for new code, say).

    When no deployer answers, None — the create is sent again and de-duplicated where it
    lands — unless ``must_know`` (a private function: a second answer would show an invoke
    key that is not the stored one), when the 503 stands.
    """
    try:
        view = await request.app[DEPLOYER].get(function_id, include_deleted=True)
    except Problem as problem:
        if problem.status == 404 or (problem.status == 503 and not must_know):
            return None
        raise
    if view.state == State.DELETED:
        raise Problem(
            409,
            "Idempotency key already used",
            f"the function this {HEADER} made ({function_id}) has since been deleted; "
            f"send a new {HEADER} to create another",
            "idempotency-key-used",
        )
    if request_digest and view.request_digest and view.request_digest != request_digest:
        raise Problem(
            422,
            "Idempotency key reused",
            f"this {HEADER} was sent with another create request, which made function "
            f"{function_id}; a retry must repeat its request, and a new create needs a new "
            f"{HEADER}",
            "idempotency-key-reused",
        )
    return view
