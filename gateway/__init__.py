"""gateway package (see DESIGN §2): the client SDK, the CLI and the server command."""

from gateway.client import GatewayClient, GatewayError, NoWorkerError, SentMessage, StreamedEvent

__all__ = ["GatewayClient", "GatewayError", "NoWorkerError", "SentMessage", "StreamedEvent"]
