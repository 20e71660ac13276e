"""Band selections as a user types them ("4,3,2", "B04,B03,B02"), parsed one way for the
command line, the dialogs and Processing; band names compared one way ("B04" is "b4")."""

from __future__ import annotations

import re


def parse_bands(text: str | None) -> tuple[int | str, ...] | None:
    """'4,3,2' -> (4, 3, 2); 'B04, B03' -> ('B04', 'B03'); '' or None -> None (the default
    bands). Numbers are 1-based band indexes, anything else a band name; the engine checks
    them against each raster and names the file when one is missing."""
    parts = [part.strip() for part in (text or "").split(",") if part.strip()]
    return tuple(int(part) if part.isdigit() else part for part in parts) or None


def normalize_band_name(name: str) -> str:
    """Canonical band name for matching: "B04" and "b4" -> "B4", "B08A" -> "B8A"."""
    text = str(name).strip().upper()
    match = re.fullmatch(r"B0*(\d+)(A?)", text)
    return f"B{match.group(1)}{match.group(2)}" if match else text
