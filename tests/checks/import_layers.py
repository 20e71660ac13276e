"""Which module may import which: every module's imports read with `ast` (top-level and inside
functions, relative ones resolved), checked against rules given as data.

A package's modules are found on disk, so the check runs on any tree (the repository, or a
temporary copy in the self-test) without importing anything it checks."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    """A top-level package: its dotted name and its folder, relative to the tree's root."""

    name: str
    folder: str


@dataclass(frozen=True)
class Import:
    """One import statement: the importing module, the module imported, where."""

    module: str
    imported: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.imported}"


def within(name: str, prefix: str) -> bool:
    """`name` is the module `prefix` or one below it ("mrhash.search" in "mrhash", not
    "mrhash_qgis")."""
    return name == prefix or name.startswith(prefix + ".")


def module_name(package: Package, path: Path, root: Path) -> str:
    parts = path.relative_to(root / package.folder).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package.name, *parts))


def imports_in(path: Path, module: str) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) of every import anywhere in the file: at the top, in
    functions, in `if TYPE_CHECKING:` blocks. `from a import b` counts as a and a.b, since b
    may be a module."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # the package a relative import starts from: a module's parent, or the
                # package itself for an __init__
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:
                if alias.name != "*":
                    yield f"{base}.{alias.name}", node.lineno


def imports_of(root: Path, package: Package) -> Iterator[Import]:
    """Every import made by the package's modules below `root`."""
    for path in sorted((root / package.folder).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        module = module_name(package, path, root)
        for imported, line in imports_in(path, module):
            yield Import(module, imported, path.relative_to(root), line)


@dataclass(frozen=True)
class Forbidden:
    """The modules `of` never import any of `forbidden`."""

    rule: str
    of: Sequence[str]
    forbidden: Sequence[str]

    def violations(self, imports: Sequence[Import]) -> list[Import]:
        return [i for i in imports if any(within(i.module, p) for p in self.of)
                and any(within(i.imported, f) for f in self.forbidden)]


@dataclass(frozen=True)
class StandardLibraryOnly:
    """The modules of `package` import only the standard library and the package itself."""

    rule: str
    package: str

    def violations(self, imports: Sequence[Import]) -> list[Import]:
        return [i for i in imports if within(i.module, self.package)
                and not within(i.imported, self.package)
                and i.imported.split(".")[0] not in sys.stdlib_module_names]


@dataclass(frozen=True)
class Layers:
    """Packages in order, lowest first: a module never imports one of a later (higher) layer.
    A module belongs to the longest listed package it is in, so a stage package of the engine
    ("mrhash.sources") can be listed before the engine ("mrhash") that holds it."""

    rule: str
    order: Sequence[str]

    def layer(self, name: str) -> int | None:
        matches = [p for p in self.order if within(name, p)]
        return self.order.index(max(matches, key=len)) if matches else None

    def violations(self, imports: Sequence[Import]) -> list[Import]:
        found = []
        for i in imports:
            own, other = self.layer(i.module), self.layer(i.imported)
            if own is not None and other is not None and other > own:
                found.append(i)
        return found


@dataclass(frozen=True)
class Acyclic:
    """No module of `packages` reaches itself through imports (top-level or in functions):
    each cycle is reported once, by the import that closes it."""

    rule: str
    packages: Sequence[str]
    modules: frozenset[str]  # the modules that exist (an import may name a class in one)

    def violations(self, imports: Sequence[Import]) -> list[Import]:
        edges: dict[str, dict[str, Import]] = {}
        for i in imports:
            if (i.imported in self.modules and i.imported != i.module
                    and any(within(i.module, p) for p in self.packages)):
                edges.setdefault(i.module, {}).setdefault(i.imported, i)
        found, done, path = [], set(), []

        def visit(module: str) -> None:  # depth first; an edge back into `path` is a cycle
            path.append(module)
            for target, statement in sorted(edges.get(module, {}).items()):
                if target in path:
                    found.append(statement)
                elif target not in done:
                    visit(target)
            path.pop()
            done.add(module)

        for module in sorted(edges):
            if module not in done:
                visit(module)
        return found


def module_names(root: Path, packages: Sequence[Package]) -> frozenset[str]:
    """Every module and package of `packages` below `root`."""
    return frozenset(module_name(p, path, root) for p in packages
                     for path in (root / p.folder).rglob("*.py")
                     if "__pycache__" not in path.parts)
