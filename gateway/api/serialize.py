"""Read-model rows as JSON responses.

Rows are flat dataclasses whose JSON columns already hold plain JSON values, so they are
encoded directly (times as RFC 3339) rather than through FastAPI's generic encoder, which
walks every nested value and costs more than the query on large transcripts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from fastapi.responses import Response


def as_json(row: Any) -> dict[str, Any]:
    return {spec.name: _plain(getattr(row, spec.name)) for spec in dataclasses.fields(row)}


def as_json_list(rows: Iterable[Any]) -> list[dict[str, Any]]:
    return [as_json(row) for row in rows]


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def json_response(payload: Any, status_code: int = 200) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(body.encode(), status_code=status_code, media_type="application/json")


__all__ = ["as_json", "as_json_list", "json_response"]
