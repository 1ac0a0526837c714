"""One ``FaultStack`` for the fault matrix module, replaced when a scenario broke it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultStack


class _Shared:
    def __init__(self, root: Path, workload: Path) -> None:
        self.root = root
        self.workload = workload
        self.current: FaultStack | None = None
        self.made = 0

    def get(self) -> FaultStack:
        if self.current is not None and not self.current.healthy():
            self.current.stop(strict=False)
            self.current = None
        if self.current is None:
            self.made += 1
            self.current = FaultStack(self.root / f"stack{self.made}", self.workload).start()
        return self.current


@pytest.fixture(scope="module")
def _shared(tmp_path_factory: pytest.TempPathFactory, workload_binary: Path) -> Iterator[_Shared]:
    shared = _Shared(tmp_path_factory.mktemp("faults"), workload_binary)
    yield shared
    if shared.current is not None:
        shared.current.stop()


@pytest.fixture
def fault_stack(_shared: _Shared) -> Iterator[FaultStack]:
    """The module's stack, healthy; after the test faults are cleared and pods gone."""
    fs = _shared.get()
    yield fs
    fs.sim("/_sim/faults", "DELETE")
