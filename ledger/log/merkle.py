"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and their verification.

Everything here is a pure function over bytes: no I/O, no storage. The server stores every *complete*
subtree node as ``(level, index, hash)``: level 0 holds the leaf hashes, and node ``(level, index)`` covers
the leaves ``[index * 2**level, (index + 1) * 2**level)``. A node is complete once all the leaves it covers
exist, and its hash never changes after that, so stored nodes are immutable.

The tree's right edge is usually not a complete subtree. RFC 9162 hashes such an edge by splitting at the
largest power of two (section 2.1.1), which is the same as folding its complete subtrees from right to left
(:func:`_fold`). That is how proofs are built from complete nodes only: every hash a proof needs is either a
complete node or the fold of a few complete nodes on the right edge. Proof generation is split in two so the
server fetches all of them in one query: :func:`inclusion_proof_nodes` / :func:`consistency_proof_nodes`
name the nodes, :func:`inclusion_proof` / :func:`consistency_proof` assemble the proof from them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "Frontier",
    "MissingNodeError",
    "NodeId",
    "ProofError",
    "StoredNode",
    "append",
    "append_levels",
    "consistency_proof",
    "consistency_proof_nodes",
    "frontier_nodes",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

# RFC 9162 section 2.1.1: domain separation between leaf and interior node hashes, which is what stops a
# second-preimage attack that passes an interior node off as a leaf.
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
# RFC 6962 fixed SHA-256; RFC 9162 makes the hash a log parameter, and this log (like C2SP checkpoints) uses it.
HASH_SIZE = 32
# RFC 9162 section 2.1.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

# The stored size of a Frontier: a big-endian uint64 tree size followed by its hashes.
_SIZE_BYTES = 8
_MAX_TREE_SIZE = 2**64 - 1

NodeId = tuple[int, int]
"""``(level, index)`` of a complete subtree node."""

StoredNode = tuple[int, int, bytes]
"""``(level, index, hash)`` of a complete subtree node, as the server stores it."""


class ProofError(Exception):
    """A proof does not verify, or its inputs are malformed (bad index, size, length or hash size)."""


class MissingNodeError(KeyError):
    """A node needed to build a proof is not in the mapping the caller fetched."""

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of its argument; a sentence reads better in logs.
        return str(self.args[0]) if self.args else super().__str__()


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || data)`` (section 2.1.1)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)`` (section 2.1.1)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return MTH (RFC 9162 section 2.1.1) of a list of already-hashed leaves.

    The empty tree's root is ``SHA-256("")``; a one-leaf tree's root is its leaf hash.
    """
    frontier, _ = append(Frontier.empty(), leaf_hashes)
    return frontier.root()


# ---------------------------------------------------------------------------------------------------------
# Frontier: the compact right edge of the tree, and appending to it.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frontier:
    """The roots of the complete subtrees that make up a tree of ``size`` leaves.

    There is one root per set bit of ``size``, from the largest (leftmost) subtree to the smallest, so a
    tree of 13 = 8 + 4 + 1 leaves has the roots of nodes (3, 0), (2, 2) and (0, 12). This is all that is
    needed to compute the root of the whole tree and to append more leaves.
    """

    size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not _is_count(self.size):
            raise ValueError(f"a frontier's size must be an integer from 0 to 2**64 - 1, not {self.size!r}")
        expected = self.size.bit_count()
        if len(self.hashes) != expected:
            raise ValueError(
                f"a frontier of size {self.size} has {expected} subtree roots (one per set bit), "
                f"not {len(self.hashes)}"
            )
        for position, digest in enumerate(self.hashes):
            _check_hash(digest, f"frontier hash {position}", ValueError)

    @classmethod
    def empty(cls) -> Frontier:
        """Return the frontier of the empty tree."""
        return cls(0, ())

    @property
    def nodes(self) -> tuple[StoredNode, ...]:
        """The frontier as ``(level, index, hash)`` triples, largest subtree first."""
        return tuple(
            (level, index, digest)
            for (level, index), digest in zip(frontier_nodes(self.size), self.hashes, strict=True)
        )

    def root(self) -> bytes:
        """Return the RFC 9162 root of the whole tree, computed from the frontier alone."""
        return _fold(self.hashes)

    def to_bytes(self) -> bytes:
        """Serialise as a big-endian uint64 size followed by the 32-byte hashes, largest subtree first."""
        return self.size.to_bytes(_SIZE_BYTES, "big") + b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        """Parse the output of :meth:`to_bytes`; raise ValueError if it is malformed."""
        if len(data) < _SIZE_BYTES:
            raise ValueError(f"a serialised frontier has at least {_SIZE_BYTES} bytes, got {len(data)}")
        size = int.from_bytes(data[:_SIZE_BYTES], "big")
        body = data[_SIZE_BYTES:]
        expected = size.bit_count() * HASH_SIZE
        if len(body) != expected:
            raise ValueError(
                f"a serialised frontier of size {size} has {expected} bytes of hashes, got {len(body)}"
            )
        return cls(size, tuple(body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)))

    @classmethod
    def from_nodes(cls, size: int, nodes: Mapping[NodeId, bytes]) -> Frontier:
        """Rebuild the frontier of a tree of ``size`` leaves from stored nodes.

        ``nodes`` must hold every node :func:`frontier_nodes` names for ``size``; extra nodes are ignored.
        """
        return cls(
            size, tuple(_lookup(nodes, node, f"the frontier of size {size}") for node in frontier_nodes(size))
        )


def frontier_nodes(size: int) -> list[NodeId]:
    """Return the ``(level, index)`` of the complete subtree roots of a tree of ``size``, largest first.

    These are the nodes :meth:`Frontier.from_nodes` needs, so the server can rebuild a frontier in one query.
    """
    if size < 0:
        raise ValueError(f"a tree size cannot be negative, got {size}")
    return _range_nodes(0, size)


def append(frontier: Frontier, new_leaf_hashes: Iterable[bytes]) -> tuple[Frontier, list[StoredNode]]:
    """Fold leaf hashes into the tree; return the new frontier and every node this completed.

    The list holds each new leaf itself as ``(0, index, hash)`` and every interior node that became complete,
    children before parents, so the caller can insert them all in one bulk write. The work is linear in the
    number of new leaves (each leaf completes one node per trailing one bit of its index, amortised O(1)).
    """
    # A stack of (level, hash) pairs, the largest subtree at the bottom. Its levels are strictly decreasing,
    # which is exactly the binary representation of the size.
    stack = [(level, digest) for (level, _, digest) in frontier.nodes]
    size = frontier.size
    completed: list[StoredNode] = []
    for digest in new_leaf_hashes:
        _check_hash(digest, f"leaf hash {size}", ValueError)
        if size == _MAX_TREE_SIZE:
            raise ValueError("the tree cannot grow beyond 2**64 - 1 leaves")
        level, index, carry = 0, size, digest
        completed.append((0, index, carry))
        # Merging two equal-level subtrees is adding one to a binary counter: it carries once per trailing 1.
        while stack and stack[-1][0] == level:
            _, left = stack.pop()
            carry = node_hash(left, carry)
            level, index = level + 1, index >> 1
            completed.append((level, index, carry))
        stack.append((level, carry))
        size += 1
    return Frontier(size, tuple(digest for _, digest in stack)), completed


@dataclass(frozen=True)
class Levels:
    """The complete nodes that appending leaves ``[start, end)`` to a tree of ``start`` leaves completed, level by
    level: ``rows[level]`` holds the hashes of nodes ``(level, firsts[level])``, ``(level, firsts[level] + 1)``, ...
    (level 0 being the leaves themselves), with the old tree's ``frontier`` for the nodes left of them."""

    start: int
    end: int
    frontier: Frontier
    firsts: list[int]
    rows: list[list[bytes]]

    def node(self, level: int, index: int) -> bytes:
        """The hash of complete node ``(level, index)`` of the tree of ``end`` leaves, if it is in the new rows
        or in the old frontier."""
        if level < len(self.rows):
            offset = index - self.firsts[level]
            if 0 <= offset < len(self.rows[level]):
                return self.rows[level][offset]
        for (lv, ix), digest in zip(frontier_nodes(self.frontier.size), self.frontier.hashes, strict=True):
            if (lv, ix) == (level, index):
                return digest
        raise MissingNodeError(f"node (level {level}, index {index}) is neither new nor on the old frontier")

    def root_at(self, size: int) -> bytes:
        """The RFC 9162 root of the first ``size`` leaves, for ``start <= size <= end``."""
        if not self.start <= size <= self.end:
            raise ValueError(f"size {size} is outside [{self.start}, {self.end}]")
        return _fold([self.node(level, index) for level, index in frontier_nodes(size)])

    def after(self) -> Frontier:
        """The frontier of the tree of ``end`` leaves."""
        return Frontier(self.end, tuple(self.node(lv, ix) for lv, ix in frontier_nodes(self.end)))


def append_levels(frontier: Frontier, new_leaf_hashes: Sequence[bytes]) -> Levels:
    """Fold leaf hashes into the tree level by level; the same nodes as :func:`append`, computed a whole level
    at a time (one list comprehension per level instead of a loop step per node), for bulk rebuilds."""
    start = frontier.size
    end = start + len(new_leaf_hashes)
    if end > _MAX_TREE_SIZE:
        raise ValueError("the tree cannot grow beyond 2**64 - 1 leaves")
    for position, digest in enumerate(new_leaf_hashes):
        if type(digest) is not bytes or len(digest) != HASH_SIZE:
            _check_hash(digest, f"leaf hash {start + position}", ValueError)
    old = {level: digest for level, _, digest in frontier.nodes}
    rows: list[list[bytes]] = [list(new_leaf_hashes)]
    firsts = [start]
    level = 0
    sha256 = hashlib.sha256
    while True:
        low, high = start >> (level + 1), end >> (level + 1)
        if high <= low:
            break
        row = rows[level]
        if firsts[level] & 1:
            # the left sibling of the first new node was completed before: it is on the old frontier
            row = [old[level], *row]
        rows.append(
            [sha256(NODE_PREFIX + row[k] + row[k + 1]).digest() for k in range(0, 2 * (high - low), 2)]
        )
        firsts.append(low)
        level += 1
    return Levels(start, end, frontier, firsts, rows)


# ---------------------------------------------------------------------------------------------------------
# Proof generation from stored complete nodes.
# ---------------------------------------------------------------------------------------------------------


def inclusion_proof_nodes(index: int, size: int) -> list[NodeId]:
    """Return the complete nodes needed for the inclusion proof of leaf ``index`` in a tree of ``size``.

    There are O(log size) of them: each proof element is either one complete node, or (on the tree's right
    edge) the fold of a few complete nodes.
    """
    _check_inclusion_params(index, size)
    return _flatten(_inclusion_ranges(index, size))


def inclusion_proof(index: int, size: int, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """Build the RFC 9162 section 2.1.3.1 inclusion proof PATH(index, D[size]) from stored nodes.

    ``nodes`` must hold every node :func:`inclusion_proof_nodes` names; a missing one raises
    :class:`MissingNodeError`. The proof lists sibling hashes from the leaf up to the root.
    """
    _check_inclusion_params(index, size)
    what = f"the inclusion proof for leaf {index} in a tree of size {size}"
    return [_range_hash(start, end, nodes, what) for start, end in _inclusion_ranges(index, size)]


def consistency_proof_nodes(first: int, second: int) -> list[NodeId]:
    """Return the complete nodes needed for the consistency proof from tree size ``first`` to ``second``.

    There are O(log second) of them; none when ``first`` is 0 or equal to ``second`` (the proof is empty).
    """
    _check_consistency_params(first, second)
    return _flatten(_consistency_ranges(first, second))


def consistency_proof(first: int, second: int, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """Build the RFC 9162 section 2.1.4.1 consistency proof PROOF(first, D[second]) from stored nodes.

    The proof is empty when ``first`` is 0 or equal to ``second``. ``nodes`` must hold every node
    :func:`consistency_proof_nodes` names; a missing one raises :class:`MissingNodeError`.
    """
    _check_consistency_params(first, second)
    what = f"the consistency proof from size {first} to size {second}"
    return [_range_hash(start, end, nodes, what) for start, end in _consistency_ranges(first, second)]


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH make up PATH(index, D[0:size]), in proof order (RFC 9162 section 2.1.3.1).

    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])       if m < k
                  = PATH(m - k, D[k:n]) : MTH(D[0:k])   if m >= k
    where k is the largest power of two smaller than n. The recursion is unrolled top-down and the
    siblings collected in reverse, so the list runs from the leaf upwards.
    """
    start, end = 0, size
    siblings: list[tuple[int, int]] = []
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index < start + k:
            siblings.append((start + k, end))
            end = start + k
        else:
            siblings.append((start, start + k))
            start += k
    siblings.reverse()
    return siblings


def _consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH make up PROOF(first, D[0:second]), in proof order (RFC 9162 section 2.1.4.1).

    SUBPROOF(m, D[n], b) = []                                  if m = n and b is true
                         = [MTH(D[n])]                         if m = n and b is false
                         = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])        if m <= k
                         = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]) if m > k
    PROOF(m, D[n]) = SUBPROOF(m, D[n], true). RFC 9162 defines it for 0 < m < n; here m = 0 and m = n give
    the empty proof (see :func:`verify_consistency`).
    """
    if first == 0 or first == second:
        return []
    start, end, b = 0, second, True
    outer: list[tuple[int, int]] = []
    # In the recursion m is always first - start: the left edge of the old tree inside the current range.
    while first - start != end - start:
        k = _largest_power_of_two_below(end - start)
        if first - start <= k:
            outer.append((start + k, end))
            end = start + k
        else:
            outer.append((start, start + k))
            start += k
            b = False
    outer.reverse()
    return outer if b else [(start, end), *outer]


def _range_nodes(start: int, end: int) -> list[NodeId]:
    """Decompose the leaf range [start, end) into complete aligned subtrees, largest first.

    Every range a proof uses starts at a multiple of a power of two at least as large as its width, so the
    decomposition follows the binary representation of the width and its fold (:func:`_fold`) equals the
    RFC 9162 MTH of the range.
    """
    nodes: list[NodeId] = []
    while start < end:
        # The largest level whose node starts at `start` (alignment) and fits before `end`.
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def _range_hash(start: int, end: int, nodes: Mapping[NodeId, bytes], what: str) -> bytes:
    """MTH(D[start:end]) from the stored complete nodes covering that range."""
    return _fold([_lookup(nodes, node, what) for node in _range_nodes(start, end)])


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Combine complete-subtree roots (largest first) into the RFC 9162 MTH of the range they cover.

    MTH splits a range at the largest power of two below its width (section 2.1.1); for a right-edge range
    that is the largest subtree against the MTH of the rest, so the fold runs from the right.
    """
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for digest in reversed(hashes[:-1]):
        result = node_hash(digest, result)
    return result


def _flatten(ranges: list[tuple[int, int]]) -> list[NodeId]:
    return [node for start, end in ranges for node in _range_nodes(start, end)]


def _lookup(nodes: Mapping[NodeId, bytes], node: NodeId, what: str) -> bytes:
    try:
        digest = nodes[node]
    except KeyError:
        level, index = node
        first_leaf, last_leaf = index << level, ((index + 1) << level) - 1
        raise MissingNodeError(
            f"{what} needs node (level {level}, index {index}), covering leaves {first_leaf} to {last_leaf}, "
            "but it was not among the nodes supplied"
        ) from None
    _check_hash(digest, f"stored node (level {node[0]}, index {node[1]})", ValueError)
    return digest


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n`` > 1), RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


# ---------------------------------------------------------------------------------------------------------
# Verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2).
# ---------------------------------------------------------------------------------------------------------


def root_from_inclusion_proof(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Return the root that an inclusion proof for ``leaf_hash`` at ``index`` in a tree of ``size`` implies.

    Follows the iterative algorithm of RFC 9162 section 2.1.3.2. Raises :class:`ProofError` if the inputs are
    malformed, including a proof of the wrong length for this index and size.
    """
    _check_inclusion_params(index, size)
    _check_hash(leaf_hash, "the leaf hash", ProofError)
    expected_length = len(_inclusion_ranges(index, size))
    if len(proof) != expected_length:
        raise ProofError(
            f"an inclusion proof for leaf {index} in a tree of size {size} has {expected_length} hashes, "
            f"but this one has {len(proof)}"
        )
    for position, digest in enumerate(proof):
        _check_hash(digest, f"inclusion proof element {position}", ProofError)

    # Step 2: fn walks the leaf's path, sn the tree's right edge.
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:  # Step 4a; unreachable once the length matched, kept as the RFC's own guard.
            raise ProofError(f"the inclusion proof for leaf {index} in a tree of size {size} is too long")
        if fn & 1 or fn == sn:
            # Step 4b: p is a left sibling, or the node is on the right edge with no sibling at this level.
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # Step 5
        raise ProofError(f"the inclusion proof for leaf {index} in a tree of size {size} is too short")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves whose root is ``root``.

    RFC 9162 section 2.1.3.2. Returns nothing on success; raises :class:`ProofError` naming the expected and
    the computed root otherwise.

    An RFC 9162 proof does not bind the tree size by itself (the proof for leaf 0 of a tree of 5 leaves has
    the same shape as for a tree of 8), so ``size`` and ``root`` must come from the same signed checkpoint.
    """
    _check_hash(root, "the root hash", ProofError)
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if not hmac.compare_digest(computed, root):
        raise ProofError(
            f"inclusion proof for leaf {index} in tree of size {size} computes root {computed.hex()} "
            f"but the expected root is {root.hex()}"
        )


def verify_consistency(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> None:
    """Check that the tree of ``first`` leaves with ``first_root`` is a prefix of the one of ``second``.

    RFC 9162 section 2.1.4.2. Returns nothing on success; raises :class:`ProofError` naming what was
    expected and what was computed otherwise. Edge cases, which RFC 9162 leaves to the caller:

    * ``first == second``: the proof must be empty and the two roots equal.
    * ``first == 0``: the empty tree is a prefix of every tree, so the proof must be empty; ``first_root``
      must still be the empty tree's root, ``SHA-256("")``.

    As with inclusion, the proof does not bind the sizes by themselves (the proof from 1 to 2 leaves also
    fits 2 to 3 leaves), so each size must come from the same signed checkpoint as its root.
    """
    _check_consistency_params(first, second)
    _check_hash(first_root, "the first root hash", ProofError)
    _check_hash(second_root, "the second root hash", ProofError)
    for position, digest in enumerate(proof):
        _check_hash(digest, f"consistency proof element {position}", ProofError)
    expected_length = len(_consistency_ranges(first, second))
    if len(proof) != expected_length:
        raise ProofError(
            f"a consistency proof from size {first} to size {second} has {expected_length} hashes, "
            f"but this one has {len(proof)}"
        )

    if first == 0:
        if not hmac.compare_digest(first_root, EMPTY_ROOT):
            raise ProofError(
                f"a tree of size 0 has root {EMPTY_ROOT.hex()}, but the first root is {first_root.hex()}"
            )
        if second == 0 and not hmac.compare_digest(second_root, EMPTY_ROOT):
            raise ProofError(
                f"a tree of size 0 has root {EMPTY_ROOT.hex()}, but the second root is {second_root.hex()}"
            )
        return
    if first == second:
        if not hmac.compare_digest(first_root, second_root):
            raise ProofError(
                f"two trees of the same size {first} must have the same root, "
                f"but they are {first_root.hex()} and {second_root.hex()}"
            )
        return

    # Step 2: when first is a power of two, the old root is itself a node of the new tree and the proof
    # omits it, so the verifier starts from it.
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    # Step 3 and 4: skip the levels where the old tree's last node is a right child of a complete node.
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5
    fr = sr = path[0]
    # Step 6
    for c in path[1:]:
        if sn == 0:  # Step 6a; unreachable once the length matched, kept as the RFC's own guard.
            raise ProofError(f"the consistency proof from size {first} to size {second} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7
    if sn != 0:
        raise ProofError(f"the consistency proof from size {first} to size {second} is too short")
    if not hmac.compare_digest(fr, first_root):
        raise ProofError(
            f"consistency proof from size {first} to size {second} computes first root {fr.hex()} "
            f"but the expected first root is {first_root.hex()}"
        )
    if not hmac.compare_digest(sr, second_root):
        raise ProofError(
            f"consistency proof from size {first} to size {second} computes second root {sr.hex()} "
            f"but the expected second root is {second_root.hex()}"
        )


# ---------------------------------------------------------------------------------------------------------
# Input checks.
# ---------------------------------------------------------------------------------------------------------


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_TREE_SIZE


def _check_inclusion_params(index: int, size: int) -> None:
    if not _is_count(size):
        raise ProofError(f"a tree size must be an integer from 0 to 2**64 - 1, not {size!r}")
    if not _is_count(index) or index >= size:
        raise ProofError(
            f"leaf index {index!r} is not in a tree of size {size} (it must be from 0 to size - 1)"
        )


def _check_consistency_params(first: int, second: int) -> None:
    if not _is_count(first) or not _is_count(second):
        raise ProofError(f"tree sizes must be integers from 0 to 2**64 - 1, not {first!r} and {second!r}")
    if first > second:
        raise ProofError(f"a tree of size {first} cannot be a prefix of a smaller tree of size {second}")


def _check_hash(digest: object, what: str, error: type[Exception]) -> None:
    if not isinstance(digest, bytes):
        raise error(f"{what} must be bytes, not {type(digest).__name__}")
    if len(digest) != HASH_SIZE:
        raise error(f"{what} is {len(digest)} bytes long, but a SHA-256 hash is {HASH_SIZE}")
