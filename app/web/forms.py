"""Numbers that arrive as text (form fields, Content-Length), read strictly and never with a 500."""

from __future__ import annotations


def whole_number(text: str) -> int | None:
    """Plain ASCII digits as an int, else None. str.isdigit() alone takes "²" (which int() refuses)
    and "٣", and int() refuses more than 4300 digits: each of those was a 500 somewhere."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    try:
        return int(text)
    except ValueError:  # past Python's limit on digits: no count or seed of ours is that long
        return None
