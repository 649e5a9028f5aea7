"""The event contract in docs/asyncapi/ is what FastStream generates from the workers'
typed handlers today: a change to a message model shows up here until ``make docs`` is
run and the new documents are committed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("service", ["deployer", "reaper"])
def test_the_asyncapi_documents_are_current(service: str, tmp_path: Path) -> None:
    out = tmp_path / f"{service}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYFAAS_")}
    subprocess.run(
        [sys.executable, "-m", "faststream", "docs", "gen", "--factory",
         f"pyfaas_{service}.app:build_app", "--out", str(out)],
        check=True, cwd=tmp_path, env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    generated = json.loads(out.read_text())
    committed = json.loads((ROOT / "docs" / "asyncapi" / f"{service}.json").read_text())
    assert generated == committed, "run `make docs` and commit docs/asyncapi/"
    assert generated["asyncapi"].startswith("3.")
