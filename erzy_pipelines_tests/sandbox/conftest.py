"""Fixtures: sandboxes started on a free port and httpx clients that talk to them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from erzy_pipelines.sandbox import SandboxServer

from .helpers import api

StartSandbox = Callable[..., SandboxServer]


@pytest.fixture
def start_sandbox() -> Iterator[StartSandbox]:
    """Start sandboxes with config overrides; every one is stopped after the test."""
    started: list[SandboxServer] = []

    def start(**overrides: Any) -> SandboxServer:
        overrides.setdefault("port", 0)
        srv = SandboxServer(**overrides).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def srv(start_sandbox: StartSandbox) -> SandboxServer:
    """A sandbox with generous limits, so only the tests about limits ever meet them."""
    return start_sandbox(limits=((10_000, 60.0),))


@pytest.fixture
def client(srv: SandboxServer) -> Iterator[httpx.Client]:
    with api(srv) as c:
        yield c
