"""Fixtures of the fault matrix (its table is printed by the root conftest's summary hook)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from erzy_pipelines.erzycall import client as client_module
from erzy_pipelines.erzycall.retry import RetryPolicy
from erzy_pipelines.orchestration.assets import step as step_module
from erzy_pipelines_tests.faults.lab import FaultLab

# The client's retry loop as shipped (6 attempts, same key), with short backoff: the scenarios
# test what is retried and with which key, not how long the backoff sleeps. Retry-After on a
# 429 is still honoured to the second.
FAST_RETRY = partial(RetryPolicy, base_delay=0.01, max_delay=0.05)


@pytest.fixture(autouse=True)
def _fast_in_process_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "RetryPolicy", FAST_RETRY)
    monkeypatch.setattr(step_module, "STEP_RETRY_SECONDS", 0)


@pytest.fixture
def make_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FaultLab]]:
    """``make_lab(strict=True)``: a fresh CRM, sandbox and state database (see ``lab``)."""
    made: list[FaultLab] = []

    def make(*, strict: bool = True, seed: int = 7, name: str = "lab") -> FaultLab:
        path = tmp_path / name
        path.mkdir()
        lab = FaultLab(path, monkeypatch, strict=strict, seed=seed)
        made.append(lab)
        return lab

    yield make
    for lab in made:
        lab.close()


@pytest.fixture
def lab(make_lab: Callable[..., FaultLab]) -> FaultLab:
    return make_lab()
