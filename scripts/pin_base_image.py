"""Pin the Dockerfile's base image to the digest its tag names now (python -m scripts.pin_base_image).

Every ``FROM`` line of the Dockerfile names one base, ``python:<version>-slim-bookworm@sha256:<digest>``:
the tag for people, the digest for the builder. Moving the base (a Python patch release, a Debian
security rebuild) is a reviewed change: this resolves the tag's multi-architecture index digest with
the first tool found (``docker buildx imagetools``, ``crane``) and rewrites every ``FROM``
line, or with ``--tag`` moves to another tag. Where no tool or no registry answers it says so and
exits 1, changing nothing (our build machines have neither).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"
FROM = re.compile(r"^(FROM\s+)(python:[\w.\-]+?)(@sha256:[0-9a-f]{64})?(\s|$)", re.MULTILINE)


def base_tag(text: str) -> str:
    """The one tag every ``FROM`` line names (a Dockerfile on two bases is refused)."""
    tags = {m.group(2) for m in FROM.finditer(text)}
    if len(tags) != 1:
        raise SystemExit(f"pin-base-image: expected one base image in the Dockerfile, found {sorted(tags)}")
    return tags.pop()


def rewrite(text: str, tag: str, digest: str) -> str:
    """Every ``FROM python:...`` line pinned to ``tag@digest``."""
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ValueError(f"not an image digest: {digest!r}")
    return FROM.sub(lambda m: f"{m.group(1)}{tag}@{digest}{m.group(4)}", text)


def resolve(tag: str) -> str:
    """The digest of ``tag``'s index (all architectures), by the first tool on PATH that answers."""
    commands = []
    if shutil.which("docker"):
        commands.append(["docker", "buildx", "imagetools", "inspect", tag, "--format", "{{json .Manifest}}"])
    if shutil.which("crane"):
        commands.append(["crane", "digest", tag])
    if not commands:
        raise SystemExit("pin-base-image: neither docker (buildx) nor crane is installed; nothing changed")
    errors = []
    for cmd in commands:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603  fixed argv
        if run.returncode != 0:
            errors.append(f"{cmd[0]}: {run.stderr.strip().splitlines()[-1:] or run.returncode}")
            continue
        out = run.stdout.strip()
        if cmd[0] == "docker":
            return str(json.loads(out)["digest"])
        return out
    raise SystemExit("pin-base-image: the tag could not be resolved; nothing changed: " + "; ".join(errors))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", help="move to this tag (default: the one the Dockerfile names)")
    args = parser.parse_args(argv)
    text = DOCKERFILE.read_text()
    tag = args.tag or base_tag(text)
    digest = resolve(tag)
    new = rewrite(text, tag, digest)
    if new == text:
        print(f"{tag}@{digest}: already pinned")
    else:
        DOCKERFILE.write_text(new)
        print(f"pinned {tag}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
