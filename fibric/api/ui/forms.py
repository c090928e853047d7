"""The approver page's form posts: `application/x-www-form-urlencoded` only, read whole up to a cap.

The page's forms are plain HTML forms, so their bodies are urlencoded and
small; nothing here needs a multipart parser. A body over `MAX_BYTES` is
refused before more of it is read (the app's own body limit is far larger,
for JSON), and so is one with more than `MAX_FIELDS` fields.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request

from fibric import errors

MAX_BYTES = 256 * 1024  # a form of a plan with some hundreds of actions, each named by its key
MAX_FIELDS = 2_000
MEDIA_TYPE = "application/x-www-form-urlencoded"


class TooLarge(errors.SpecInvalid):
    """The form is larger than MAX_BYTES (413)."""


class Form:
    """The fields of one posted form, each with every value it was sent with, in order."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def one(self, name: str) -> str | None:
        """The field's first value, or None when the form has no such field."""
        values = self._fields.get(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return list(self._fields.get(name, []))


async def read(request: Request) -> Form:
    """The request's form; SpecInvalid when it is not one, TooLarge past MAX_BYTES."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != MEDIA_TYPE:
        raise errors.SpecInvalid(f"expected a form ({MEDIA_TYPE}), not {media or 'no content type'}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        raise TooLarge(f"the form is larger than {MAX_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BYTES:
            raise TooLarge(f"the form is larger than {MAX_BYTES} bytes")
    try:
        fields = parse_qs(bytes(body).decode("ascii"), keep_blank_values=True, strict_parsing=False,
                          encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as e:  # not urlencoded ASCII, bad UTF-8, too many fields
        raise errors.SpecInvalid(f"the form cannot be read: {e}") from None
    if any("\x00" in value for values in fields.values() for value in values):
        raise errors.SpecInvalid("the form cannot be read: a field holds a NUL character")
    return Form(fields)
