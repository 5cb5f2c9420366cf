"""The read-model HTTP API (DESIGN §6): FastAPI over the read models, with commands sent
through :class:`gateway.client.GatewayClient` and a live tail over Server-Sent Events.

>>> from gateway.api import ApiSettings, create_app  # doctest: +SKIP
>>> app = create_app(ApiSettings.from_env())  # doctest: +SKIP
"""

from gateway.api.app import create_app
from gateway.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
