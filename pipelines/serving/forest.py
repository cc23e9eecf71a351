"""scikit-learn tree ensembles compiled for batch inference: flat arrays walked by numba.

The demo forest (100 trees, depth 10) walks ten nodes per tree and row: a million node visits
for a 10k-row batch. scikit-learn and ONNX Runtime both follow each row's branches, and a
mispredicted branch at every level costs more than the comparison. Here every tree is
renumbered so that a node's right child sits just after its left child, and a leaf points to
itself: a row then takes `max_depth` identical steps, `node = child[node] + (x > threshold)`,
with no branch, and the rows of a block are walked level by level, each step independent of
the other rows' (the CPU overlaps their memory loads). Every index is unsigned: numba wraps a
negative signed index, so each signed load would carry a compare and an add. `python -m
benchmarks --only serving` times the demo forest's runtimes on 10k rows, one thread each: this
kernel, scikit-learn and ONNX Runtime.

The probabilities are scikit-learn's own: the same float64 leaf fractions, summed tree by tree
and divided by the number of trees (`tests/pipelines/test_forest.py` checks them to 1e-12).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

_BLOCK_ROWS = 512  # rows walked together: enough independent loads to overlap, all in L1


@dataclass(frozen=True)
class CompiledForest:
    """A fitted single-output tree classifier (a forest or one tree) as flat node arrays."""

    child: np.ndarray  # uint32, left child's global index; a leaf's own index
    feature: np.ndarray  # uint32, the feature a node tests (0 for a leaf)
    threshold: np.ndarray  # float32, largest float32 <= scikit-learn's threshold; +inf at leaves
    value: np.ndarray  # float64 (nodes, classes), class fractions at leaves
    roots: np.ndarray  # uint32, each tree's root
    depth: int

    @classmethod
    def from_estimator(cls, estimator: Any) -> CompiledForest | None:
        """The compiled form of a fitted scikit-learn tree classifier, or None for anything
        else (pipelines, regressors, multi-output trees, other model families)."""
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
        from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

        if isinstance(estimator, RandomForestClassifier | ExtraTreesClassifier):
            trees = list(getattr(estimator, "estimators_", []))
        elif isinstance(estimator, DecisionTreeClassifier | ExtraTreeClassifier):
            trees = [estimator]
        else:
            return None
        if not trees or any(getattr(t, "n_outputs_", 1) != 1 for t in trees):
            return None
        parts = [_flatten(t.tree_) for t in trees]
        offsets = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
        return cls(
            child=np.concatenate([p[0] + off for p, off in zip(parts, offsets, strict=True)]),
            feature=np.concatenate([p[1] for p in parts]),
            threshold=np.concatenate([p[2] for p in parts]),
            value=np.concatenate([p[3] for p in parts]),
            roots=offsets.astype(np.uint32),
            depth=max(t.tree_.max_depth for t in trees),
        )

    def to_bytes(self) -> bytes:
        """The arrays as one .npz file (what the registry stores beside the ONNX export)."""
        buffer = io.BytesIO()
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "depth"}
        np.savez(buffer, depth=np.int64(self.depth), **arrays)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> CompiledForest:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {f.name: npz[f.name] for f in fields(cls) if f.name != "depth"}
            depth = int(npz["depth"])
        for index in ("child", "feature", "roots"):  # int32 in files of the older format
            arrays[index] = arrays[index].astype(np.uint32, copy=False)
        return cls(depth=depth, **arrays)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (rows, classes) for a float32 matrix, as `predict_proba`.

        Runs without the GIL: threads may share one forest.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros((len(x), self.value.shape[1]))
        walk = _kernel()
        walk(x, self.child, self.feature, self.threshold, self.value, self.roots, self.depth, out)
        out /= len(self.roots)
        return out


def _flatten(tree: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One tree renumbered breadth-first so that siblings are adjacent (right = left + 1)."""
    left, right = tree.children_left, tree.children_right
    n = tree.node_count
    new = np.empty(n, dtype=np.int64)
    order = [0]
    new[0] = 0
    for old in order:  # grows while it is walked: a breadth-first queue
        if left[old] != -1:
            new[left[old]], new[right[old]] = len(order), len(order) + 1
            order += [left[old], right[old]]
    order_arr = np.asarray(order)
    is_leaf = left[order_arr] == -1
    child = np.where(is_leaf, np.arange(n), new[np.where(is_leaf, 0, left[order_arr])])
    feature = np.where(is_leaf, 0, tree.feature[order_arr])
    threshold = _float32_at_most(tree.threshold[order_arr])
    threshold[is_leaf] = np.inf
    value = tree.value[order_arr, 0, :].astype(np.float64)
    value /= value.sum(axis=1, keepdims=True)  # fractions, as DecisionTreeClassifier.predict_proba
    return child.astype(np.uint32), feature.astype(np.uint32), threshold, value


def _float32_at_most(threshold: np.ndarray) -> np.ndarray:
    """For each float64 t, the largest float32 <= t. For a float32 x, `x > t` and `x > t32` are
    then the same test (scikit-learn compares float32 features to float64 thresholds)."""
    t32 = threshold.astype(np.float32)
    over = t32.astype(np.float64) > threshold
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    return t32


_compiled: Any = None


def _kernel() -> Any:
    """The numba kernel, compiled on first use (cached on disk by numba across processes)."""
    global _compiled
    if _compiled is None:
        from numba import njit

        @njit(nogil=True, cache=True)
        def walk(x, child, feature, threshold, value, roots, depth, out):  # type: ignore[no-untyped-def]
            n, k = x.shape[0], value.shape[1]
            nodes = np.empty(_BLOCK_ROWS, np.uint32)
            for lo in range(0, n, _BLOCK_ROWS):
                m = min(n - lo, _BLOCK_ROWS)
                for root in roots:
                    nodes[:m] = root
                    for _ in range(depth):
                        for i in range(m):
                            node = nodes[i]
                            row = np.uint64(lo + i)
                            nodes[i] = child[node] + np.uint32(
                                x[row, feature[node]] > threshold[node]
                            )
                    for i in range(m):
                        for c in range(k):
                            out[lo + i, c] += value[nodes[i], c]

        _compiled = walk
    return _compiled
