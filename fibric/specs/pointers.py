"""JSON Pointers (RFC 6901) into a policy's input document, as a Policy's `mask` names them.

A Policy can mark parts of its input sensitive (`mask: [/action/args/card_number]`),
like OPA's decision-log masking: the receipt's decision record keeps
`"**masked**"` there. The pointer is relative to the input document (no
`/input` prefix) and must start at one of its documented top-level fields
(docs/policies.md), so a typo is caught at validate/apply, not silently
left unmasked. `~1` stands for `/` and `~0` for `~` inside a key; a segment
of digits also indexes an array.
"""

from __future__ import annotations

import re

# The input document's top-level fields (fibric/policies/inputs.py build_input).
INPUT_ROOTS = ("tenant", "operator", "action", "event", "plan_id", "tool", "context")
_BAD_ESCAPE = re.compile(r"~(?![01])")


def parse(pointer: str) -> tuple[str, ...]:
    """The segments of `pointer`, unescaped; ValueError says what is wrong with it."""
    if not pointer.startswith("/"):
        raise ValueError(f"'{pointer}' is not a JSON pointer: it must start with '/', "
                         "e.g. /action/args/card_number")
    raw = pointer[1:].split("/")
    if any(_BAD_ESCAPE.search(segment) for segment in raw):
        raise ValueError(f"'{pointer}': '~' must be written ~0 (and '/' inside a key ~1)")
    segments = tuple(s.replace("~1", "/").replace("~0", "~") for s in raw)
    if segments[0] not in INPUT_ROOTS:
        raise ValueError(f"'{pointer}' does not start at a field of the input document; "
                         f"expected one of: {', '.join('/' + r for r in INPUT_ROOTS)}")
    if any(s == "" for s in segments):
        raise ValueError(f"'{pointer}' has an empty segment")
    return segments
