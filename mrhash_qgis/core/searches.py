"""A search as the analyst builds it in the dock: where the query is (a click, a rectangle, a
tile, selected features), the examples marked relevant / not relevant over several rounds,
and the filters; turned into ONE engine request (`query` for a single place, `refine` once
there are marks or several examples). Saved searches live in the project file, so a search
can be re-run later by whoever opens the project."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from qgis.core import QgsProject

from mrhash_qgis.contract import protocol
from mrhash_qgis.contract.protocol import (
    IRRELEVANT,
    MAP_THRESHOLD,
    RELEVANT,
    Example,
    MapRequest,
    Place,
    QueryRequest,
    RefineRequest,
)

PROJECT_SCOPE = "MrHash"
SAVED_KEY = "saved_searches"


def place_fields(place: Place) -> dict:
    """The Place fields of a place or an example (what makes another request of it)."""
    return {f.name: getattr(place, f.name) for f in fields(Place)}


def saved_place(place: Place) -> dict:
    """A place as the engine's params, the saved searches' JSON of it."""
    saved = {k: v for k, v in place_fields(place).items() if v is not None}
    if place.point is not None:
        saved["point"] = list(place.point)
    return saved


def read_place(saved: dict) -> Place:
    """A place of a saved search (ValueError naming the field when it is not one)."""
    return Place(**Place.place_params(saved))


@dataclass
class Search:
    """What the dock asks the engine, JSON-serialisable for saved searches."""

    index: str
    k: int = 12
    queries: list[Place] = field(default_factory=list)   # the places queried (relevant)
    marks: list[Example] = field(default_factory=list)   # hits marked by the analyst
    within: str | None = None                           # WKT, EPSG:4326
    exclude_radius: float = 0.0                         # metres from the query
    name: str = ""
    maps: list[str] = field(default_factory=list)       # the GeoPackages of its maps, by round
    map_threshold: float = MAP_THRESHOLD                # the confidence its map is shown at
    # the indexed tiles under the places queried that were read from a raster: the queries
    # themselves, never shown as their hits
    indexed_tiles: list[int] = field(default_factory=list)

    def mark(self, place: Place, relevant: bool | None) -> None:
        """Mark a place (a hit's tile) relevant / not relevant (None: unmark); a later mark
        replaces it."""
        where = place_fields(place)
        self.marks = [m for m in self.marks if place_fields(m) != where]
        if relevant is not None:
            self.marks.append(Example(**where, relevant=relevant))

    def mark_of(self, place: Place) -> str:
        where = place_fields(place)
        for example in self.marks:
            if place_fields(example) == where:
                return RELEVANT if example.relevant else IRRELEVANT
        return ""

    @property
    def n_relevant(self) -> int:
        """Hits the analyst marked relevant (the places queried are not counted)."""
        return sum(m.relevant for m in self.marks)

    @property
    def n_irrelevant(self) -> int:
        return sum(not m.relevant for m in self.marks)

    def marked_tiles(self) -> set[int]:
        """The indexed tiles marked relevant or not (marks of other places left out)."""
        return {m.tile for m in self.marks if m.tile is not None}

    def queried_tiles(self) -> set[int]:
        """The indexed tiles that are the queried places themselves: never shown as hits."""
        return {q.tile for q in self.queries if q.tile is not None} | set(self.indexed_tiles)

    def request(self, thumbnails: bool = True) -> QueryRequest | RefineRequest:
        """The engine request for this search."""
        if not self.queries:
            raise ValueError("a search needs a place to query")
        if len(self.queries) == 1 and not self.marks:
            # the queried tile comes back first (distance 0): one more, then it is dropped
            return QueryRequest(**place_fields(self.queries[0]), index=self.index,
                                k=min(self.k + len(self.queried_tiles()), protocol.MAX_K),
                                within=self.within,
                                exclude_radius=self.exclude_radius, thumbnails=thumbnails)
        return RefineRequest(self.examples(), self.index, k=self.k, within=self.within,
                             thumbnails=thumbnails)

    def examples(self) -> list[Example]:
        """The places queried (relevant) and the marks, as the engine's examples."""
        return [Example(**place_fields(q), relevant=True) for q in self.queries] + self.marks

    def map_request(self, output: str, threshold: float = MAP_THRESHOLD) -> MapRequest:
        """The engine request mapping every tile like the examples into `output`."""
        return MapRequest(self.examples(), index=self.index, output=output,
                          threshold=threshold, within=self.within)

    def to_dict(self) -> dict:
        """The search as JSON (a mark as {where: place params, relevant}, as ever)."""
        return {"index": self.index, "k": self.k,
                "queries": [saved_place(q) for q in self.queries],
                "marks": [{"where": saved_place(m), "relevant": m.relevant}
                          for m in self.marks],
                "within": self.within, "exclude_radius": self.exclude_radius,
                "name": self.name, "maps": list(self.maps),
                "map_threshold": self.map_threshold, "indexed_tiles": list(self.indexed_tiles)}

    @classmethod
    def from_dict(cls, data: dict) -> Search:
        """A search saved now or by an earlier version (whose queries each named their
        `indexed_tile`)."""
        queries = [dict(q) for q in data.get("queries", [])]
        marks = [Example(**place_fields(read_place(dict(m["where"]))),
                         relevant=bool(m["relevant"])) for m in data.get("marks", [])]
        indexed = [int(t) for t in data.get("indexed_tiles", [])] + [
            int(q["indexed_tile"]) for q in queries if q.get("indexed_tile") is not None]
        return cls(index=str(data["index"]), k=int(data.get("k", 12)),
                   queries=[read_place(q) for q in queries], marks=marks,
                   within=data.get("within"),
                   exclude_radius=float(data.get("exclude_radius") or 0.0),
                   name=str(data.get("name", "")),
                   maps=[str(path) for path in data.get("maps", [])],
                   map_threshold=float(data.get("map_threshold", MAP_THRESHOLD)),
                   indexed_tiles=indexed)


def saved_searches(project: QgsProject | None = None) -> list[Search]:
    """The searches saved in the project (unreadable entries are skipped)."""
    project = project or QgsProject.instance()
    text, _ok = project.readEntry(PROJECT_SCOPE, SAVED_KEY, "[]")
    try:
        entries = json.loads(text or "[]")
    except ValueError:
        return []
    searches = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            searches.append(Search.from_dict(entry))
        except (KeyError, TypeError, ValueError):
            continue
    return searches


def save_search(search: Search, name: str, project: QgsProject | None = None) -> None:
    """Save (or replace, by name) a copy of `search` in the project; the project is marked
    dirty so QGIS asks to save it."""
    project = project or QgsProject.instance()
    kept = [s for s in saved_searches(project) if s.name != name]
    copy = Search.from_dict({**search.to_dict(), "name": name})
    project.writeEntry(PROJECT_SCOPE, SAVED_KEY,
                       json.dumps([s.to_dict() for s in [*kept, copy]]))
    project.setDirty(True)


def delete_search(name: str, project: QgsProject | None = None) -> None:
    project = project or QgsProject.instance()
    kept = [s.to_dict() for s in saved_searches(project) if s.name != name]
    project.writeEntry(PROJECT_SCOPE, SAVED_KEY, json.dumps(kept))
    project.setDirty(True)
