"""C2SP tlog-tiles: the log's Merkle tree and entries as static, cacheable resources.

A tile at level ``L`` and index ``N`` is up to 256 consecutive hashes of tree level ``8 * L``: hash ``i`` is
``MTH(D[(N * 256 + i) * 256**L : (N * 256 + i + 1) * 256**L])`` (c2sp.org/tlog-tiles, "Merkle Tree"), which is
the stored complete node ``(8 * L, N * 256 + i)``. A partial tile (the right edge) has ``W < 256`` hashes and the
path suffix ``.p/<W>``. The index is written as zero-padded 3-digit path elements, all but the last prefixed with
``x`` (1234067 is ``x001/x234/067``).

Entry bundles (``tile/entries/<N>[.p/<W>]``) hold the same range of log entries, each as a big-endian uint16
length and the entry's bytes. An entry of this log is the 32-byte SHA-256 digest its event id names, so that each
bundle entry hashes (RFC 9162 ``SHA-256(0x00 || entry)``) to the level-0 tile hash at its position; the signed
event itself is served by ``/v1/log/entries`` and ``/v1/events/{id}``.

Pure functions only: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileError",
    "TileRef",
    "entry_bundle",
    "parse_tile_path",
    "tile_path",
    "tiles_for_size",
]

TILE_HEIGHT = 8
"""c2sp.org/tlog-tiles: a tile spans 8 levels of the tree."""

TILE_WIDTH = 256
"""Hashes in a full tile (8,192 bytes) and entries in a full entry bundle."""

MAX_TILE_LEVEL = 63
"""c2sp.org/tlog-tiles: ``<L>`` is between 0 and 63."""

_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_ELEMENT = re.compile(r"x?[0-9]{3}")


class TileError(ValueError):
    """A tile path is malformed, or names a tile the log does not serve."""


@dataclass(frozen=True)
class TileRef:
    """A tile (``level`` 0-63) or, with ``level`` None, an entry bundle; ``width`` is 256 for a full one."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    @property
    def tree_level(self) -> int:
        """The Merkle tree level whose nodes this tile holds (entry bundles: the leaves)."""
        return TILE_HEIGHT * (self.level or 0)

    @property
    def first_node(self) -> int:
        """The index, on :attr:`tree_level`, of the tile's first hash."""
        return self.index * TILE_WIDTH

    def leaves_needed(self) -> int:
        """The tree size from which on every hash of this tile (at its width) is a complete node."""
        return int((self.first_node + self.width) * TILE_WIDTH ** (self.level or 0))

    @property
    def path(self) -> str:
        return tile_path(self.level, self.index, self.width)


def _encode_index(index: int) -> str:
    digits = str(index)
    digits = "0" * (-len(digits) % 3) + digits
    elements = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + element for element in elements[:-1]), elements[-1]])


def tile_path(level: int | None, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]``, or ``tile/entries/<N>[.p/<W>]`` when ``level`` is None."""
    if index < 0 or not 1 <= width <= TILE_WIDTH:
        raise TileError(f"no tile has index {index} and width {width}")
    head = "entries" if level is None else str(level)
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{head}/{_encode_index(index)}{suffix}"


def parse_tile_path(path: str) -> TileRef:
    """Parse the part of a URL after ``<prefix>/``: ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]``,
    strictly (canonical index elements, no leading zeroes in ``L`` or ``W``)."""
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileError(f"{path!r} is not a tile path (tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>])")
    head, rest = parts[1], parts[2:]
    if head == "entries":
        level: int | None = None
    elif _LEVEL.fullmatch(head) and int(head) <= MAX_TILE_LEVEL:
        level = int(head)
    else:
        raise TileError(f"the tile level {head!r} is not a number from 0 to 63 without leading zeroes")
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        width_text = rest[-1]
        if not _WIDTH.fullmatch(width_text) or int(width_text) >= TILE_WIDTH:
            raise TileError(f"the partial tile width {width_text!r} is not a number from 1 to 255")
        width = int(width_text)
        rest = [*rest[:-2], rest[-2][:-2]]
    if not rest or any(not _ELEMENT.fullmatch(element) for element in rest):
        raise TileError(f"the tile index in {path!r} is not zero-padded 3-digit path elements")
    if any(not element.startswith("x") for element in rest[:-1]) or rest[-1].startswith("x"):
        raise TileError(f"in {path!r} every index element but the last starts with 'x', and only those")
    index = int("".join(element.lstrip("x") for element in rest))
    if _encode_index(index) != "/".join(rest):
        raise TileError(f"the tile index in {path!r} is not in its canonical form ({_encode_index(index)})")
    return TileRef(level, index, width)


def tiles_for_size(size: int) -> list[TileRef]:
    """Every tile a tree of ``size`` leaves is made of (full and partial), lowest level first; the example of
    c2sp.org/tlog-tiles: 70,000 leaves make 273 full and one partial (112) level-0 tiles, one full and one partial
    (17) level-1 tile, and a partial level-2 tile of width 1."""
    tiles: list[TileRef] = []
    level = 0
    while size >= TILE_WIDTH**level and level <= MAX_TILE_LEVEL:
        hashes = size // TILE_WIDTH**level
        tiles.extend(TileRef(level, n) for n in range(hashes // TILE_WIDTH))
        if hashes % TILE_WIDTH:
            tiles.append(TileRef(level, hashes // TILE_WIDTH, hashes % TILE_WIDTH))
        level += 1
    return tiles


def entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Entries as an entry bundle: each a big-endian uint16 length followed by its bytes."""
    out = bytearray()
    for entry in entries:
        if len(entry) > 0xFFFF:
            raise TileError(f"an entry of {len(entry)} bytes does not fit a uint16 length")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)
