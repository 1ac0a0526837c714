"""Server-side printing: the meta.k8s.io Table form kubectl asks for."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def render(request: web.Request, kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The Table for ``body`` (an object or a list of ``kind``) when the request's
    Accept header asks for one and the kind has columns; otherwise None, and the
    caller answers with the plain object."""
    return None
