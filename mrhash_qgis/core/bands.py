"""Band selections typed by the user, as the engine takes them."""

from __future__ import annotations


def parse_bands(text: str | None) -> list[int | str] | None:
    """'4,3,2' -> [4, 3, 2]; 'B04, B03' -> ['B04', 'B03']; '' -> None (the default bands).
    The engine checks them against the rasters and names the file when one is missing."""
    parts = [part.strip() for part in (text or "").split(",") if part.strip()]
    return [int(part) if part.isdigit() else part for part in parts] or None
