"""The stacks of issue 16's tests: the rtctl tests' ``stack`` (shared by a module, reset
after each test) and ``stack_factory`` (a stack of the test's own), as processes."""

from __future__ import annotations

from tests.rtctl.conftest import Stack, StackFactory, _module_stack, stack, stack_factory

__all__ = ["Stack", "StackFactory", "_module_stack", "stack", "stack_factory"]
