"""Band selections as a user types them ("4,3,2", "B04,B03,B02"), parsed one way for the
command line, the dialogs and Processing."""

from __future__ import annotations


def parse_bands(text: str | None) -> tuple[int | str, ...] | None:
    """'4,3,2' -> (4, 3, 2); 'B04, B03' -> ('B04', 'B03'); '' or None -> None (the default
    bands). Numbers are 1-based band indexes, anything else a band name; the engine checks
    them against each raster and names the file when one is missing."""
    parts = [part.strip() for part in (text or "").split(",") if part.strip()]
    return tuple(int(part) if part.isdigit() else part for part in parts) or None
