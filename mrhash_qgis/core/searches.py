"""A search as the analyst builds it in the dock: where the query is (a click, a rectangle, a
tile, selected features), the examples marked relevant / not relevant over several rounds,
and the filters; turned into ONE engine request (`query` for a single place, `refine` once
there are marks or several examples). Saved searches live in the project file, so a search
can be re-run later by whoever opens the project."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from qgis.core import QgsProject

from mrhash_qgis.contract import protocol
from mrhash_qgis.contract.protocol import (
    IRRELEVANT,
    MAP_THRESHOLD,
    RELEVANT,
    MapRequest,
    Place,
    QueryRequest,
    RefineRequest,
)

PROJECT_SCOPE = "MrHash"
SAVED_KEY = "saved_searches"


@dataclass
class Example:
    """One marked example: a place as the engine's query params (`tile`, `point` + `crs`
    (+ `raster`), or `footprint` + `footprint_crs` (+ `raster`)) and whether it is relevant."""

    where: dict
    relevant: bool = True

    def key(self) -> str:
        return json.dumps(self.where, sort_keys=True)

    def to_engine(self) -> protocol.Example:
        return protocol.Example(**Place.place_params(self.where), relevant=self.relevant)


@dataclass
class Search:
    """What the dock asks the engine, JSON-serialisable for saved searches."""

    index: str
    k: int = 12
    queries: list[dict] = field(default_factory=list)   # the places queried (relevant)
    marks: list[Example] = field(default_factory=list)  # hits marked by the analyst
    within: str | None = None                           # WKT, EPSG:4326
    exclude_radius: float = 0.0                         # metres from the query
    name: str = ""
    maps: list[str] = field(default_factory=list)       # the GeoPackages of its maps, by round
    map_threshold: float = MAP_THRESHOLD                # the confidence its map is shown at

    def mark(self, where: dict, relevant: bool | None) -> None:
        """Mark a hit relevant / not relevant (None: unmark); a later mark replaces it."""
        key = json.dumps(where, sort_keys=True)
        self.marks = [m for m in self.marks if m.key() != key]
        if relevant is not None:
            self.marks.append(Example(dict(where), relevant))

    def mark_of(self, where: dict) -> str:
        key = json.dumps(where, sort_keys=True)
        for example in self.marks:
            if example.key() == key:
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
        return {int(m.where["tile"]) for m in self.marks if m.where.get("tile") is not None}

    def queried_tiles(self) -> set[int]:
        """The indexed tiles that are the queried places themselves: never shown as hits."""
        tiles = set()
        for place in self.queries:
            for key in ("tile", "indexed_tile"):
                if place.get(key) is not None:
                    tiles.add(int(place[key]))
        return tiles

    def request(self, thumbnails: bool = True) -> QueryRequest | RefineRequest:
        """The engine request for this search."""
        if not self.queries:
            raise ValueError("a search needs a place to query")
        if len(self.queries) == 1 and not self.marks:
            # the queried tile comes back first (distance 0): one more, then it is dropped
            return QueryRequest(**Place.place_params(self.queries[0]), index=self.index,
                                k=min(self.k + len(self.queried_tiles()), protocol.MAX_K),
                                within=self.within,
                                exclude_radius=self.exclude_radius, thumbnails=thumbnails)
        return RefineRequest(self.examples(), self.index, k=self.k, within=self.within,
                             thumbnails=thumbnails)

    def examples(self) -> list[protocol.Example]:
        """The places queried (relevant) and the marks, as the engine's examples."""
        return [Example(q).to_engine() for q in self.queries] + [m.to_engine()
                                                                  for m in self.marks]

    def map_request(self, output: str, threshold: float = MAP_THRESHOLD) -> MapRequest:
        """The engine request mapping every tile like the examples into `output`."""
        return MapRequest(self.examples(), index=self.index, output=output,
                          threshold=threshold, within=self.within)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Search:
        marks = [Example(dict(m["where"]), bool(m["relevant"])) for m in data.get("marks", [])]
        return cls(index=str(data["index"]), k=int(data.get("k", 12)),
                   queries=[dict(q) for q in data.get("queries", [])], marks=marks,
                   within=data.get("within"),
                   exclude_radius=float(data.get("exclude_radius") or 0.0),
                   name=str(data.get("name", "")),
                   maps=[str(path) for path in data.get("maps", [])],
                   map_threshold=float(data.get("map_threshold", MAP_THRESHOLD)))


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
