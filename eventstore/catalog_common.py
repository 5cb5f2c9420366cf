"""Building blocks shared by the payloads of the catalog: content, object references, errors.

Re-exported by :mod:`eventstore.catalog`; import them from there.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from eventstore.envelope import MAX_ID_LENGTH, Payload

IdStr = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
"""An identifier carried in a payload (run ids, tool call ids, question ids...)."""

ShortText = Annotated[str, Field(max_length=4096)]
"""A human-readable reason or detail line; long enough to be useful, short enough to log."""

CancelMode = Literal["graceful", "force"]
"""``graceful`` lets the handler finish its current step; ``force`` stops it at once."""

SHA256_PATTERN = "^[0-9a-f]{64}$"
_SHA256 = re.compile(SHA256_PATTERN)


class ObjectRef(Payload):
    """A blob in a JetStream Object Store bucket (DESIGN §3: large payloads go there).

    ``sha256`` is the hex digest of the whole object; readers check it on download.
    """

    bucket: IdStr
    name: Annotated[str, Field(min_length=1, max_length=1024)]
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[
        str,
        Field(
            description="SHA-256 of the object: 64 lowercase hex characters",
            json_schema_extra={"pattern": SHA256_PATTERN},
        ),
    ]
    mime_type: Annotated[str, Field(max_length=255)] | None = None

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, value: str) -> str:
        if not _SHA256.fullmatch(value):
            raise ValueError(
                f"sha256 must be 64 lowercase hex characters, got {value[:80]!r} "
                f"({len(value)} characters)"
            )
        return value


class ContentPart(Payload):
    """One part of a multi-part message: text, an image or a file.

    A ``text`` part carries ``text``; ``image_url`` and ``file`` parts carry exactly one
    of ``url`` (any URL, including ``data:``) or ``ref`` (an object in the store).
    """

    type: Literal["text", "image_url", "file"]
    text: str | None = None
    url: Annotated[str, Field(min_length=1, max_length=8192)] | None = None
    ref: ObjectRef | None = None
    mime_type: Annotated[str, Field(max_length=255)] | None = None
    name: Annotated[str, Field(max_length=1024)] | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> ContentPart:
        if self.type == "text":
            if self.text is None:
                raise ValueError("a text part needs 'text'")
            if self.url is not None or self.ref is not None:
                raise ValueError("a text part takes no 'url' or 'ref'")
        else:
            if (self.url is None) == (self.ref is None):
                raise ValueError(f"an {self.type} part needs exactly one of 'url' or 'ref'")
            if self.text is not None:
                raise ValueError(f"an {self.type} part takes no 'text'")
        return self


Content = str | list[ContentPart]
"""What a user or an agent says: plain text, or a list of content parts."""


class ErrorInfo(Payload):
    """What went wrong: the exception class (or error kind) and its message."""

    type: Annotated[str, Field(min_length=1, max_length=256)]
    message: str


def content_text(content: Content | None) -> str:
    """The text of ``content``: the string itself, or its text parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if part.text is not None)


__all__ = [
    "SHA256_PATTERN",
    "CancelMode",
    "Content",
    "ContentPart",
    "ErrorInfo",
    "IdStr",
    "ObjectRef",
    "ShortText",
    "content_text",
]
