"""Print every Kubernetes object the kubernetes runtime would apply for one script.

Run by ``make render SCRIPT=path/to/main.py`` (``python -m pyfaas_deployer.render``), like
``helm template``: operators read what pyfaas will do to their cluster, with the current
``PYFAAS_*`` settings, before they let it. The objects come from ``runtime/manifests.py``,
the same builder the runtime applies with; nothing here talks to a cluster.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import yaml

from .runtime.base import FunctionSpec
from .runtime.manifests import FunctionConfigError, function_objects
from .settings import DeployerSettings


class _Dumper(yaml.SafeDumper):
    """Scripts print as literal blocks, readable as the code they are."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(spec: FunctionSpec, settings: DeployerSettings) -> str:
    """Multi-document YAML, one document per object, in the order they are applied."""
    return yaml.dump_all(
        function_objects(spec, settings),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyfaas_deployer.render",
        description="Print the Kubernetes objects pyfaas would apply for a script.",
    )
    parser.add_argument("script", type=Path, help="the function's main.py")
    parser.add_argument(
        "--id", type=uuid.UUID, help="function id (default: derived from the script)"
    )
    parser.add_argument("--owner", default="render", help="the user who owns it")
    parser.add_argument("--name", default="main", help="the function's name")
    parser.add_argument("--env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        code = args.script.read_text(encoding="utf-8")
    except OSError as exc:
        parser.error(f"cannot read {args.script}: {exc.strerror}")
    # Derived from the content so that rendering the same script twice prints the same.
    function_id = args.id or uuid.uuid5(uuid.NAMESPACE_URL, f"pyfaas-render:{code}")
    spec = FunctionSpec(
        id=function_id, owner=args.owner, name=args.name, code=code, env=dict(args.env)
    )
    try:
        sys.stdout.write(render(spec, DeployerSettings()))
    except FunctionConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
