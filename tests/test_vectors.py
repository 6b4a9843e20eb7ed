"""edge_agent.knowledge.vectors: the in-memory matrix the cache and the memory search."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.knowledge.vectors import VectorIndex

FIELDS = (("id", np.int64), ("created", np.float64))


def unit(*values: float) -> npt.NDArray[np.float32]:
    v = np.asarray(values, dtype=np.float32)
    return v / np.float32(np.linalg.norm(v))


def index_of(rows: list[tuple[int, npt.NDArray[np.float32]]], capacity: int = 0) -> VectorIndex:
    index = VectorIndex(2, FIELDS, capacity)
    for entry_id, vector in rows:
        row = index.append(vector[np.newaxis])
        index.field("id")[row] = entry_id
        index.field("created")[row] = float(entry_id)
    return index


X, Y, XY = unit(1, 0), unit(0, 1), unit(1, 1)


def test_append_grows_and_keeps_rows_and_fields() -> None:
    index = VectorIndex(3, FIELDS)
    assert len(index) == 0 and index.capacity == 0
    rng = np.random.default_rng(0)
    added = rng.normal(size=(50, 3)).astype(np.float32)
    for i in range(0, 50, 10):
        start = index.append(added[i : i + 10])
        assert start == i
        index.field("id")[start:] = np.arange(i, i + 10)
    assert len(index) == 50 and index.capacity >= 50
    np.testing.assert_array_equal(index.vectors, added)
    np.testing.assert_array_equal(index.field("id"), np.arange(50))


def test_the_matrix_starts_on_a_cache_line_after_growing() -> None:
    index = VectorIndex(5, capacity=1)
    for _ in range(20):
        index.append(np.ones((1, 5)))
        assert index.vectors.ctypes.data % 64 == 0


def test_append_refuses_rows_of_another_width() -> None:
    index = VectorIndex(2)
    with pytest.raises(ValueError, match="2 dimensions"):
        index.append(np.ones((1, 3)))
    with pytest.raises(ValueError, match="2 dimensions"):
        index.append(np.ones(2))  # one vector is a 2-D array of one row
    assert len(index) == 0


def test_similarities_are_dot_products() -> None:
    index = index_of([(1, X), (2, Y), (3, XY)])
    np.testing.assert_allclose(index.similarities(X), [1.0, 0.0, np.sqrt(0.5)], rtol=1e-6)


def test_best_takes_the_lowest_row_on_a_tie() -> None:
    index = index_of([(1, Y), (2, X), (3, X), (4, XY)])
    assert index.best(X) == (1, pytest.approx(1.0))
    assert index.best(XY) == (3, pytest.approx(1.0))


def test_best_only_among_the_candidates() -> None:
    index = index_of([(1, X), (2, Y), (3, XY)])
    where = np.array([False, True, True])
    row, score = index.best(X, where=where) or (None, None)
    assert row == 2 and score == pytest.approx(np.sqrt(0.5))
    assert index.best(X, where=np.zeros(3, dtype=bool)) is None
    assert VectorIndex(2).best(X) is None


def test_nearest_returns_every_candidate_in_order_when_there_are_few() -> None:
    index = index_of([(1, X), (2, Y), (3, XY)])
    rows, scores = index.nearest(Y, k=5)
    assert rows.tolist() == [0, 1, 2]
    np.testing.assert_allclose(scores, [0.0, 1.0, np.sqrt(0.5)], atol=1e-6)
    rows, _ = index.nearest(Y, k=5, where=np.array([True, False, True]))
    assert rows.tolist() == [0, 2]


def test_nearest_picks_the_k_most_similar() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(200, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(8)
    index.append(vectors)
    query = vectors[17]
    where = rng.random(200) < 0.5
    rows, scores = index.nearest(query, k=10, where=where)
    candidates = np.flatnonzero(where)
    expected = candidates[np.argsort(-(vectors[candidates] @ query))[:10]]
    assert sorted(rows.tolist()) == sorted(expected.tolist())
    np.testing.assert_array_equal(scores, index.similarities(query)[rows])
    with pytest.raises(ValueError, match="k must be"):
        index.nearest(query, k=0)


def test_swap_remove_moves_the_last_row_and_its_fields() -> None:
    index = index_of([(1, X), (2, Y), (3, XY)])
    index.swap_remove(0)
    assert index.field("id").tolist() == [3, 2]
    assert index.field("created").tolist() == [3.0, 2.0]
    np.testing.assert_array_equal(index.vectors, [XY, Y])
    index.swap_remove(1)  # the last row: nothing moves
    assert index.field("id").tolist() == [3]
    with pytest.raises(IndexError):
        index.swap_remove(1)


def test_keep_compacts_in_order() -> None:
    index = index_of([(1, X), (2, Y), (3, XY), (4, X)])
    index.keep([True, False, True, True])
    assert index.field("id").tolist() == [1, 3, 4]
    np.testing.assert_array_equal(index.vectors, [X, XY, X])
    with pytest.raises(ValueError, match="mask"):
        index.keep([True])


def test_replace_changes_the_vector_not_the_fields() -> None:
    index = index_of([(1, X), (2, Y)])
    index.replace(0, Y)
    assert index.best(Y) == (0, pytest.approx(1.0))
    assert index.field("id").tolist() == [1, 2]
    with pytest.raises(IndexError):
        index.replace(2, X)


def test_an_index_of_no_dimensions_holds_nothing_yet() -> None:
    index = VectorIndex(0, (("right", np.bool_),))
    assert len(index) == 0 and index.dim == 0
    assert index.field("right").shape == (0,)
