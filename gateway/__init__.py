"""gateway package (see DESIGN §2): the client SDK, the CLI and the server command."""

from gateway.client import (
    CancelOutcome,
    GatewayClient,
    GatewayError,
    NoWorkerError,
    RunNotFoundError,
    RunNotWaitingError,
    SentCommand,
    SentMessage,
    StreamedEvent,
)

__all__ = [
    "CancelOutcome",
    "GatewayClient",
    "GatewayError",
    "NoWorkerError",
    "RunNotFoundError",
    "RunNotWaitingError",
    "SentCommand",
    "SentMessage",
    "StreamedEvent",
]
