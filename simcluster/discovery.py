"""Discovery and OpenAPI documents, so that kubectl and client libraries can find
the resources the simulated cluster serves."""

from __future__ import annotations

from aiohttp import web


def routes() -> list[web.RouteDef]:
    """Routes for /version, /api, /apis, the group-version resource lists and
    /openapi/v2, /openapi/v3. Registered before the resource routes."""
    return []
