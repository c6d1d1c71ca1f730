"""RFC 9162 Merkle tree: golden vectors, a cross-check with pymerkle, and property tests."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pymerkle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.log.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    LEAF_PREFIX,
    NODE_PREFIX,
    Frontier,
    MissingNodeError,
    NodeId,
    ProofError,
    append,
    consistency_proof,
    consistency_proof_nodes,
    frontier_nodes,
    inclusion_proof,
    inclusion_proof_nodes,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "assets" / "merkle_vectors.json").read_text())
LEAVES = [bytes.fromhex(leaf) for leaf in VECTORS["leaves"]]
LEAF_HASHES = [leaf_hash(leaf) for leaf in LEAVES]
ROOTS = [bytes.fromhex(root) for root in VECTORS["roots"]]  # ROOTS[n - 1] is the root of the first n leaves.
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def store_of(leaf_hashes: Sequence[bytes]) -> dict[NodeId, bytes]:
    """Every complete node of the tree, as the server would store it."""
    _, nodes = append(Frontier.empty(), leaf_hashes)
    return {(level, index): digest for level, index, digest in nodes}


def hexes(hashes: Sequence[bytes]) -> list[str]:
    return [digest.hex() for digest in hashes]


def flip_bit(data: bytes, bit: int) -> bytes:
    return bytes(byte ^ (1 << (bit % 8)) if i == bit // 8 else byte for i, byte in enumerate(data))


GOLDEN_STORE = store_of(LEAF_HASHES)

# A bigger tree for the property tests; every smaller tree is a prefix of it, as in the server's store.
BIG_SIZE = 300
BIG_LEAF_HASHES = [leaf_hash(b"event %d" % i) for i in range(BIG_SIZE)]
BIG_STORE = store_of(BIG_LEAF_HASHES)


def _roots_of_every_prefix(leaf_hashes: Sequence[bytes]) -> list[bytes]:
    frontier, roots = Frontier.empty(), [EMPTY_ROOT]
    for digest in leaf_hashes:
        frontier, _ = append(frontier, [digest])
        roots.append(frontier.root())
    return roots


BIG_ROOTS = _roots_of_every_prefix(BIG_LEAF_HASHES)  # BIG_ROOTS[n] is the root of the first n leaves.


def fetch(node_ids: Sequence[NodeId], size: int) -> dict[NodeId, bytes]:
    """Simulate the server's single query: only the named nodes, each complete within the first `size` leaves."""
    for level, index in node_ids:
        assert (index + 1) << level <= size, (
            f"node ({level}, {index}) is not complete in a tree of size {size}"
        )
    return {node: BIG_STORE[node] for node in node_ids}


def expect_proof_error(check: Callable[[], None]) -> ProofError:
    with pytest.raises(ProofError) as caught:
        check()
    return caught.value


# ---------------------------------------------------------------------------------------------------------
# Golden vectors (github.com/transparency-dev/merkle, see tests/assets/merkle_vectors.json).
# ---------------------------------------------------------------------------------------------------------


def test_prefixes_are_rfc9162() -> None:
    assert LEAF_PREFIX == b"\x00"
    assert NODE_PREFIX == b"\x01"
    assert HASH_SIZE == 32


def test_hasher_vectors() -> None:
    hasher = VECTORS["hasher"]
    assert EMPTY_ROOT.hex() == hasher["empty_root"]
    assert root_hash([]).hex() == hasher["empty_root"]
    assert Frontier.empty().root().hex() == hasher["empty_root"]
    assert leaf_hash(b"").hex() == hasher["empty_leaf"]
    assert leaf_hash(bytes.fromhex(hasher["leaf"]["data"])).hex() == hasher["leaf"]["hash"]
    node = hasher["node"]
    assert node_hash(bytes.fromhex(node["left"]), bytes.fromhex(node["right"])).hex() == node["hash"]


@pytest.mark.parametrize("size", range(1, len(ROOTS) + 1))
def test_golden_roots(size: int) -> None:
    assert root_hash(LEAF_HASHES[:size]) == ROOTS[size - 1]
    frontier, _ = append(Frontier.empty(), LEAF_HASHES[:size])
    assert frontier.root() == ROOTS[size - 1]
    assert Frontier.from_nodes(size, GOLDEN_STORE).root() == ROOTS[size - 1]


@pytest.mark.parametrize(
    "vector", VECTORS["inclusion_proofs"], ids=lambda v: f"{v['leaf_index']}-of-{v['tree_size']}"
)
def test_golden_inclusion_proofs(vector: dict[str, Any]) -> None:
    index, size = vector["leaf_index"], vector["tree_size"]
    expected = [bytes.fromhex(digest) for digest in vector["proof"]]
    nodes = {node: GOLDEN_STORE[node] for node in inclusion_proof_nodes(index, size)}
    assert inclusion_proof(index, size, nodes) == expected
    assert root_from_inclusion_proof(LEAF_HASHES[index], index, size, expected) == ROOTS[size - 1]
    verify_inclusion(LEAF_HASHES[index], index, size, expected, ROOTS[size - 1])


@pytest.mark.parametrize(
    "vector", VECTORS["consistency_proofs"], ids=lambda v: f"{v['first']}-to-{v['second']}"
)
def test_golden_consistency_proofs(vector: dict[str, Any]) -> None:
    first, second = vector["first"], vector["second"]
    expected = [bytes.fromhex(digest) for digest in vector["proof"]]
    nodes = {node: GOLDEN_STORE[node] for node in consistency_proof_nodes(first, second)}
    assert consistency_proof(first, second, nodes) == expected
    verify_consistency(first, second, expected, ROOTS[first - 1], ROOTS[second - 1])


@pytest.mark.parametrize("vector", VECTORS["inclusion_nodes"], ids=lambda v: f"{v['index']}-of-{v['size']}")
def test_golden_inclusion_node_ids(vector: dict[str, Any]) -> None:
    got = inclusion_proof_nodes(vector["index"], vector["size"])
    assert len(got) == len(vector["nodes"])
    assert set(got) == {tuple(node) for node in vector["nodes"]}


@pytest.mark.parametrize(
    "vector", VECTORS["consistency_nodes"], ids=lambda v: f"{v['first']}-to-{v['second']}"
)
def test_golden_consistency_node_ids(vector: dict[str, Any]) -> None:
    got = consistency_proof_nodes(vector["first"], vector["second"])
    assert len(got) == len(vector["nodes"])
    assert set(got) == {tuple(node) for node in vector["nodes"]}


@pytest.mark.parametrize("vector", VECTORS["inclusion_nodes_invalid"], ids=str)
def test_golden_invalid_inclusion_requests(vector: dict[str, Any]) -> None:
    with pytest.raises(ProofError, match="is not in a tree of size"):
        inclusion_proof_nodes(vector["index"], vector["size"])


@pytest.mark.parametrize("vector", VECTORS["consistency_nodes_invalid"], ids=str)
def test_golden_invalid_consistency_requests(vector: dict[str, Any]) -> None:
    with pytest.raises(ProofError, match="cannot be a prefix"):
        consistency_proof_nodes(vector["first"], vector["second"])


def _inclusion_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """The corruptions transparency-dev/merkle's verify_test.go applies to every known-good inclusion proof."""
    probes = [
        ("index - 1", index - 1, size, proof, root, leaf),
        ("index + 1", index + 1, size, proof, root, leaf),
        ("index ^ 2", index ^ 2, size, proof, root, leaf),
        ("size * 2", index, size * 2, proof, root, leaf),
        ("size // 2", index, size // 2, proof, root, leaf),
        ("wrong leaf", index, size, proof, root, b"WrongLeaf"),
        ("empty root", index, size, proof, EMPTY_ROOT, leaf),
        ("random root", index, size, proof, SOME_HASH, leaf),
        ("trailing garbage", index, size, [*proof, b""], root, leaf),
        ("trailing root", index, size, [*proof, root], root, leaf),
        ("preceding garbage", index, size, [b"", *proof], root, leaf),
        ("preceding root", index, size, [root, *proof], root, leaf),
    ]
    for i in range(len(proof)):
        modified = list(proof)
        modified[i] = bytes([modified[i][0] ^ 8]) + modified[i][1:]
        probes.append((f"modified proof[{i}] bit 3", index, size, modified, root, leaf))
    if proof:
        probes.append(("removed component", index, size, proof[:-1], root, leaf))
    if len(proof) > 1:
        probes.append(("inserted component", index, size, [proof[0], SOME_HASH, *proof[1:]], root, leaf))
    return probes


@pytest.mark.parametrize(
    "vector", VECTORS["inclusion_proofs"], ids=lambda v: f"{v['leaf_index']}-of-{v['tree_size']}"
)
def test_golden_inclusion_corruptions_fail(vector: dict[str, Any]) -> None:
    index, size = vector["leaf_index"], vector["tree_size"]
    proof = [bytes.fromhex(digest) for digest in vector["proof"]]
    for desc, p_index, p_size, p_proof, p_root, p_leaf in _inclusion_probes(
        index, size, proof, ROOTS[size - 1], LEAF_HASHES[index]
    ):
        with pytest.raises(ProofError):
            verify_inclusion(p_leaf, p_index, p_size, p_proof, p_root)
            pytest.fail(f"verified despite {desc}")


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS["consistency_proofs"] if v["proof"]],
    ids=lambda v: f"{v['first']}-{v['second']}",
)
def test_golden_consistency_corruptions_fail(vector: dict[str, Any]) -> None:
    first, second = vector["first"], vector["second"]
    proof = [bytes.fromhex(digest) for digest in vector["proof"]]
    root1, root2 = ROOTS[first - 1], ROOTS[second - 1]
    # The corruptions transparency-dev/merkle's verify_test.go applies to every known-good consistency proof.
    probes = [
        ("first - 1", first - 1, second, root1, root2, proof),
        ("first + 1", first + 1, second, root1, root2, proof),
        ("first ^ 2", first ^ 2, second, root1, root2, proof),
        ("second * 2", first, second * 2, root1, root2, proof),
        ("second // 2", first, second // 2, root1, root2, proof),
        ("wrong root1", first, second, b"WrongRoot", root2, proof),
        ("wrong root2", first, second, root1, b"WrongRoot", proof),
        ("swapped roots", first, second, root2, root1, proof),
        ("empty proof", first, second, root1, root2, []),
        ("trailing garbage", first, second, root1, root2, [*proof, b""]),
        ("trailing root1", first, second, root1, root2, [*proof, root1]),
        ("trailing root2", first, second, root1, root2, [*proof, root2]),
        ("preceding garbage", first, second, root1, root2, [b"", *proof]),
        ("preceding root1", first, second, root1, root2, [root1, *proof]),
        ("preceding root2", first, second, root1, root2, [root2, *proof]),
        ("preceding proof[0]", first, second, root1, root2, [proof[0], *proof]),
        ("truncated proof", first, second, root1, root2, proof[:-1]),
    ]
    for i in range(len(proof)):
        modified = list(proof)
        modified[i] = bytes([modified[i][0] ^ 16]) + modified[i][1:]
        probes.append((f"modified proof[{i}] bit 4", first, second, root1, root2, modified))
    for desc, p_first, p_second, p_root1, p_root2, p_proof in probes:
        with pytest.raises(ProofError):
            verify_consistency(p_first, p_second, p_proof, p_root1, p_root2)
            pytest.fail(f"verified despite {desc}")


# ---------------------------------------------------------------------------------------------------------
# Edge cases, adapted from transparency-dev/merkle's TestVerifyConsistency and TestVerifyInclusion.
# ---------------------------------------------------------------------------------------------------------

ROOT_A = leaf_hash(b"don't care 1")
ROOT_B = leaf_hash(b"don't care 2")


@pytest.mark.parametrize(
    ("first", "second", "root1", "root2", "proof", "ok"),
    [
        (0, 0, ROOT_A, ROOT_B, [], False),
        (1, 1, ROOT_A, ROOT_B, [], False),
        # Always consistent. Unlike the Go library, a size-0 tree must have the empty root (documented).
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (0, 1, EMPTY_ROOT, ROOT_B, [], True),
        (0, 1, ROOT_A, ROOT_B, [], False),
        (1, 1, ROOT_B, ROOT_B, [], True),
        # Time travel to the past.
        (1, 0, ROOT_A, ROOT_B, [], False),
        (2, 1, ROOT_A, ROOT_B, [], False),
        # Empty proof for a non-trivial pair.
        (1, 2, ROOT_A, ROOT_B, [], False),
        # Roots don't match.
        (0, 0, EMPTY_ROOT, ROOT_B, [], False),
        (1, 1, EMPTY_ROOT, ROOT_B, [], False),
        # Roots match but the proof is not empty.
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
    ],
)
def test_consistency_edge_cases(
    first: int, second: int, root1: bytes, root2: bytes, proof: list[bytes], ok: bool
) -> None:
    if ok:
        verify_consistency(first, second, proof, root1, root2)
    else:
        expect_proof_error(lambda: verify_consistency(first, second, proof, root1, root2))


def test_trivial_consistency_proofs_are_empty() -> None:
    assert consistency_proof_nodes(0, 0) == []
    assert consistency_proof_nodes(0, 5) == []
    assert consistency_proof_nodes(5, 5) == []
    assert consistency_proof(0, 5, {}) == []
    assert consistency_proof(5, 5, {}) == []


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_rejects_bad_root_or_leaf(index: int, size: int) -> None:
    expect_proof_error(lambda: verify_inclusion(SOME_HASH, index, size, [], b""))
    expect_proof_error(lambda: verify_inclusion(b"", index, size, [], EMPTY_ROOT))
    expect_proof_error(lambda: verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT))


def test_single_leaf_tree() -> None:
    digest = leaf_hash(b"data")
    assert root_hash([digest]) == digest
    assert inclusion_proof(0, 1, {}) == []
    verify_inclusion(digest, 0, 1, [], digest)
    expect_proof_error(lambda: verify_inclusion(digest, 0, 1, [], b""))
    expect_proof_error(lambda: verify_inclusion(b"", 0, 1, [], digest))
    expect_proof_error(lambda: verify_inclusion(digest, 0, 1, [], SOME_HASH))


# ---------------------------------------------------------------------------------------------------------
# Error messages and malformed input.
# ---------------------------------------------------------------------------------------------------------


def test_inclusion_error_names_expected_and_computed_root() -> None:
    proof = inclusion_proof(5, 8, GOLDEN_STORE)
    error = expect_proof_error(lambda: verify_inclusion(LEAF_HASHES[5], 5, 8, proof, SOME_HASH))
    computed = root_from_inclusion_proof(LEAF_HASHES[5], 5, 8, proof)
    assert str(error) == (
        f"inclusion proof for leaf 5 in tree of size 8 computes root {computed.hex()} "
        f"but the expected root is {SOME_HASH.hex()}"
    )


def test_consistency_error_names_expected_and_computed_root() -> None:
    proof = consistency_proof(6, 8, GOLDEN_STORE)
    error = expect_proof_error(lambda: verify_consistency(6, 8, proof, ROOTS[5], SOME_HASH))
    assert f"but the expected second root is {SOME_HASH.hex()}" in str(error)
    assert ROOTS[7].hex() in str(error)
    error = expect_proof_error(lambda: verify_consistency(6, 8, proof, SOME_HASH, ROOTS[7]))
    assert f"computes first root {ROOTS[5].hex()} but the expected first root is {SOME_HASH.hex()}" in str(
        error
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: verify_inclusion(LEAF_HASHES[0], 8, 8, [], ROOTS[7]),
            "leaf index 8 is not in a tree of size 8",
        ),
        (lambda: verify_inclusion(LEAF_HASHES[0], -1, 8, [], ROOTS[7]), "leaf index -1 is not in a tree"),
        (lambda: verify_inclusion(LEAF_HASHES[0], 0, 8, [], ROOTS[7]), "has 3 hashes, but this one has 0"),
        (lambda: verify_inclusion(b"short", 0, 1, [], ROOTS[0]), "the leaf hash is 5 bytes long"),
        (lambda: verify_inclusion(LEAF_HASHES[0], 0, 2, [b"x" * 33], ROOTS[1]), "element 0 is 33 bytes"),
        (lambda: verify_inclusion(LEAF_HASHES[0], 0, 1, [], b"x" * 31), "the root hash is 31 bytes"),
        (lambda: verify_consistency(3, 2, [], ROOTS[2], ROOTS[1]), "cannot be a prefix of a smaller tree"),
        (lambda: verify_consistency(2, 5, [], ROOTS[1], ROOTS[4]), "has 2 hashes, but this one has 0"),
        (lambda: verify_consistency(2, 5, [b"", b""], ROOTS[1], ROOTS[4]), "element 0 is 0 bytes"),
        (lambda: inclusion_proof(True, 2, GOLDEN_STORE), "leaf index True is not in a tree"),
    ],
)
def test_malformed_input_is_a_proof_error_with_a_sentence(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ProofError, match=message):
        call()


def test_missing_node_is_a_key_error_naming_the_node() -> None:
    nodes = dict.fromkeys(inclusion_proof_nodes(0, 7), SOME_HASH)
    del nodes[(1, 2)]
    with pytest.raises(KeyError) as caught:
        inclusion_proof(0, 7, nodes)
    assert isinstance(caught.value, MissingNodeError)
    assert str(caught.value) == (
        "the inclusion proof for leaf 0 in a tree of size 7 needs node (level 1, index 2), "
        "covering leaves 4 to 5, but it was not among the nodes supplied"
    )
    with pytest.raises(MissingNodeError, match="consistency proof from size 3 to size 7 needs node"):
        consistency_proof(3, 7, {})


# ---------------------------------------------------------------------------------------------------------
# Frontier and append.
# ---------------------------------------------------------------------------------------------------------


def test_frontier_shape() -> None:
    frontier, _ = append(Frontier.empty(), BIG_LEAF_HASHES[:13])
    assert frontier.size == 13
    assert [(level, index) for level, index, _ in frontier.nodes] == [(3, 0), (2, 2), (0, 12)]
    assert frontier_nodes(13) == [(3, 0), (2, 2), (0, 12)]
    assert [digest for _, _, digest in frontier.nodes] == [
        BIG_STORE[(3, 0)],
        BIG_STORE[(2, 2)],
        BIG_STORE[(0, 12)],
    ]
    assert frontier_nodes(0) == []


def test_frontier_serialisation_round_trip_and_validation() -> None:
    frontier, _ = append(Frontier.empty(), BIG_LEAF_HASHES[:13])
    assert Frontier.from_bytes(frontier.to_bytes()) == frontier
    assert len(frontier.to_bytes()) == 8 + 3 * HASH_SIZE
    assert Frontier.from_bytes(Frontier.empty().to_bytes()) == Frontier.empty()
    with pytest.raises(ValueError, match="has 96 bytes of hashes, got 95"):
        Frontier.from_bytes(frontier.to_bytes()[:-1])
    with pytest.raises(ValueError, match="at least 8 bytes"):
        Frontier.from_bytes(b"\x00")
    with pytest.raises(ValueError, match="3 subtree roots"):
        Frontier(13, (SOME_HASH,))
    with pytest.raises(ValueError, match="frontier hash 0 is 3 bytes long"):
        Frontier(1, (b"abc",))
    with pytest.raises(ValueError, match="size must be an integer"):
        Frontier(-1, ())
    with pytest.raises(MissingNodeError, match="the frontier of size 13 needs node"):
        Frontier.from_nodes(13, {})


def test_append_rejects_bad_leaf_hash() -> None:
    with pytest.raises(ValueError, match="leaf hash 0 is 4 bytes long"):
        append(Frontier.empty(), [b"leaf"])


def test_append_returns_every_completed_node_once() -> None:
    size = 100
    frontier, nodes = append(Frontier.empty(), BIG_LEAF_HASHES[:size])
    ids = [(level, index) for level, index, _ in nodes]
    assert len(ids) == len(set(ids))
    # Exactly the nodes complete within `size` leaves: 2n - popcount(n) of them, so append is linear.
    expected = {(level, index) for level in range(size.bit_length()) for index in range(size >> level)}
    assert set(ids) == expected
    assert len(ids) == 2 * size - size.bit_count()
    # Children come before their parents, so a bulk insert never refers forward.
    position = {node: i for i, node in enumerate(ids)}
    for level, index in ids:
        if level:
            assert position[(level - 1, 2 * index)] < position[(level, index)]
            assert position[(level - 1, 2 * index + 1)] < position[(level, index)]
    assert frontier.root() == BIG_ROOTS[size]


# ---------------------------------------------------------------------------------------------------------
# Cross-check with pymerkle, an independent implementation (sha256 with the 0x00/0x01 prefixes).
# ---------------------------------------------------------------------------------------------------------

PYMERKLE_SIZE = 140


@pytest.fixture(scope="module")
def pymerkle_tree() -> Any:
    tree = pymerkle.InmemoryTree(algorithm="sha256", disable_security=False)
    for i in range(PYMERKLE_SIZE):
        tree.append_entry(b"event %d" % i)
    return tree


def test_pymerkle_leaf_hashes_and_roots_agree(pymerkle_tree: Any) -> None:
    for index in range(PYMERKLE_SIZE):
        assert pymerkle_tree.get_leaf(index + 1) == BIG_LEAF_HASHES[index]
    for size in range(PYMERKLE_SIZE + 1):
        assert pymerkle_tree.get_root(size) == BIG_ROOTS[size], size
        assert root_hash(BIG_LEAF_HASHES[:size]) == BIG_ROOTS[size]


def test_pymerkle_inclusion_proofs_agree(pymerkle_tree: Any) -> None:
    for size in range(1, PYMERKLE_SIZE + 1):
        for index in range(0, size, 1 if size <= 40 else 7):
            ours = inclusion_proof(index, size, BIG_STORE)
            theirs = pymerkle_tree.prove_inclusion(index + 1, size)
            # pymerkle's path starts with the leaf itself, then lists the RFC 9162 PATH from the bottom up.
            assert theirs.path[0] == BIG_LEAF_HASHES[index]
            assert theirs.path[1:] == ours, (index, size)
            verify_inclusion(BIG_LEAF_HASHES[index], index, size, ours, pymerkle_tree.get_root(size))


def test_pymerkle_consistency_proofs_agree(pymerkle_tree: Any) -> None:
    # pymerkle lays its consistency paths out differently from RFC 9162 section 2.1.4.1 (its own "rule" and
    # "subset" encoding), so the two are compared by outcome: each verifies against the other's roots.
    for second in range(1, PYMERKLE_SIZE + 1, 3):
        for first in range(1, second + 1, 1 if second <= 40 else 5):
            ours = consistency_proof(first, second, BIG_STORE)
            verify_consistency(
                first, second, ours, pymerkle_tree.get_root(first), pymerkle_tree.get_root(second)
            )
            theirs = pymerkle_tree.prove_consistency(first, second)
            pymerkle.verify_consistency(BIG_ROOTS[first], BIG_ROOTS[second], theirs)


# ---------------------------------------------------------------------------------------------------------
# Properties over every tree size up to BIG_SIZE.
# ---------------------------------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(min_value=1, max_value=BIG_SIZE))
    return size, draw(st.integers(min_value=0, max_value=size - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    second = draw(st.integers(min_value=1, max_value=BIG_SIZE))
    return draw(st.integers(min_value=1, max_value=second)), second


@PROPERTY_SETTINGS
@given(claim=size_and_index(), data=st.data())
def test_inclusion_proofs_from_stored_nodes_verify_and_resist_tampering(
    claim: tuple[int, int], data: st.DataObject
) -> None:
    size, index = claim
    node_ids = inclusion_proof_nodes(index, size)
    assert len(node_ids) <= 2 * math.ceil(math.log2(size)) + 1
    proof = inclusion_proof(index, size, fetch(node_ids, size))
    leaf, root = BIG_LEAF_HASHES[index], BIG_ROOTS[size]
    verify_inclusion(leaf, index, size, proof, root)

    if proof:
        element = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")
        tampered = list(proof)
        tampered[element] = flip_bit(proof[element], bit)
        expect_proof_error(lambda: verify_inclusion(leaf, index, size, tampered, root))
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="root bit")
    expect_proof_error(lambda: verify_inclusion(leaf, index, size, proof, flip_bit(root, bit)))
    expect_proof_error(lambda: verify_inclusion(flip_bit(leaf, bit), index, size, proof, root))

    # Another leaf position in the same tree always has another path, so the proof cannot fit it.
    if size > 1:
        other_index = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other index")
        expect_proof_error(lambda: verify_inclusion(leaf, other_index, size, proof, root))
    # Another size: the proof must not convince anyone holding that size's true root (RFC 9162 proofs do
    # not bind the size on their own; the checkpoint signature binds size and root together).
    other_size = data.draw(st.integers(index + 1, BIG_SIZE).filter(lambda s: s != size), label="other size")
    if proof != inclusion_proof(index, other_size, BIG_STORE):
        expect_proof_error(lambda: verify_inclusion(leaf, index, other_size, proof, BIG_ROOTS[other_size]))


@PROPERTY_SETTINGS
@given(sizes=two_sizes(), data=st.data())
def test_consistency_proofs_from_stored_nodes_verify_and_resist_tampering(
    sizes: tuple[int, int], data: st.DataObject
) -> None:
    first, second = sizes
    node_ids = consistency_proof_nodes(first, second)
    assert len(node_ids) <= 2 * math.ceil(math.log2(second)) + 2
    proof = consistency_proof(first, second, fetch(node_ids, second))
    root1, root2 = BIG_ROOTS[first], BIG_ROOTS[second]
    verify_consistency(first, second, proof, root1, root2)

    if proof:
        element = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")
        tampered = list(proof)
        tampered[element] = flip_bit(proof[element], bit)
        expect_proof_error(lambda: verify_consistency(first, second, tampered, root1, root2))
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="root bit")
    expect_proof_error(lambda: verify_consistency(first, second, proof, flip_bit(root1, bit), root2))
    expect_proof_error(lambda: verify_consistency(first, second, proof, root1, flip_bit(root2, bit)))

    # Other sizes: the proof must not convince anyone holding those sizes' true roots.
    other_first, other_second = data.draw(two_sizes().filter(lambda s: s != sizes), label="other sizes")
    if proof != consistency_proof(other_first, other_second, BIG_STORE):
        expect_proof_error(
            lambda: verify_consistency(
                other_first, other_second, proof, BIG_ROOTS[other_first], BIG_ROOTS[other_second]
            )
        )


@PROPERTY_SETTINGS
@given(chunks=st.lists(st.integers(min_value=0, max_value=40), max_size=12))
def test_append_in_chunks_matches_one_go(chunks: list[int]) -> None:
    total = min(sum(chunks), BIG_SIZE)
    one_go_frontier, one_go_nodes = append(Frontier.empty(), BIG_LEAF_HASHES[:total])

    frontier, nodes, done = Frontier.empty(), [], 0
    for chunk in chunks:
        chunk = min(chunk, total - done)
        # Persisting and reloading the frontier between batches, as the server does, changes nothing.
        frontier = Frontier.from_bytes(frontier.to_bytes())
        frontier, new_nodes = append(frontier, BIG_LEAF_HASHES[done : done + chunk])
        nodes.extend(new_nodes)
        done += chunk
        assert frontier == Frontier.from_nodes(done, BIG_STORE)
        assert frontier.root() == BIG_ROOTS[done]

    assert frontier == one_go_frontier
    assert nodes == one_go_nodes
    assert {(level, index): digest for level, index, digest in nodes} == {
        node: digest for node, digest in BIG_STORE.items() if (node[1] + 1) << node[0] <= total
    }
