"""scripts/pin_base_image: every FROM line moves to the same tag@digest; anything else is refused."""

from __future__ import annotations

import pytest

from scripts.pin_base_image import DOCKERFILE, base_tag, rewrite

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
TEXT = f"""# base
FROM python:3.11.14-slim-bookworm@{OLD} AS build
RUN true
FROM python:3.11.14-slim-bookworm@{OLD}
ENTRYPOINT ["x"]
"""


def test_every_from_line_is_rewritten_and_nothing_else() -> None:
    out = rewrite(TEXT, "python:3.11.15-slim-bookworm", NEW)
    assert out == TEXT.replace(f"python:3.11.14-slim-bookworm@{OLD}", f"python:3.11.15-slim-bookworm@{NEW}")
    assert out.count(NEW) == 2 and "AS build" in out


def test_an_unpinned_base_is_pinned() -> None:
    out = rewrite("FROM python:3.11.14-slim-bookworm AS build\n", "python:3.11.14-slim-bookworm", NEW)
    assert out == f"FROM python:3.11.14-slim-bookworm@{NEW} AS build\n"


def test_a_bad_digest_or_two_bases_are_refused() -> None:
    with pytest.raises(ValueError, match="not an image digest"):
        rewrite(TEXT, "python:3.11.14-slim-bookworm", "latest")
    with pytest.raises(SystemExit, match="one base image"):
        base_tag(TEXT + "FROM python:3.12.1-slim-bookworm\n")


def test_the_dockerfile_names_one_base() -> None:
    assert base_tag(DOCKERFILE.read_text()) == "python:3.11.14-slim-bookworm"
