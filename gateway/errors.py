"""Errors the client side raises itself (re-exported by :mod:`gateway.client`)."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of the errors :class:`~gateway.client.GatewayClient` raises itself."""


class RunNotFoundError(GatewayError, LookupError):
    """No event of this run is in the log."""


class RunNotWaitingError(GatewayError):
    """The run is not waiting for a reply: it ended, waits for something else, or its
    question was answered already."""


__all__ = ["GatewayError", "RunNotFoundError", "RunNotWaitingError"]
