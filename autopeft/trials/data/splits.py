"""The fixed train / validation / test split and the nested training subsamples.

``split_with_test`` makes the split (stratified, seeded by ``split_seed`` only, so every trial of
a study sees the same validation set; the test split is never seen by the search, only by the
final evaluation of its front) and ``stratified_take`` subsamples the training pool for
``max_train`` and for a ``fraction`` budget; smaller takes are subsets of larger ones (nested
fidelities).
"""

from __future__ import annotations

import numpy as np


def stratified_take(indices: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A stratified subsample of ``n`` of ``indices`` (sorted), deterministic in ``seed``.

    Each class keeps its share (largest remainder), at least one example per class when
    ``n`` allows. Per class, examples are taken from one fixed permutation, so a smaller
    take is (up to rounding of the shares) a subset of a larger one.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if n >= len(indices):
        return np.sort(indices)
    classes, counts = np.unique(labels[indices], return_counts=True)
    quota = counts * n / len(indices)
    take = np.floor(quota).astype(np.int64)
    if n >= len(classes):
        take = np.maximum(take, 1)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    for i in order:
        if take.sum() >= n:
            break
        if take[i] < counts[i]:
            take[i] += 1
    while take.sum() > n:  # the at-least-one rule can overshoot for tiny n
        take[int(np.argmax(take))] -= 1
    chosen = []
    for cls, k in zip(classes, take):
        members = np.sort(indices[labels[indices] == cls])
        perm = np.random.default_rng([seed, int(cls)]).permutation(len(members))
        chosen.append(members[perm[:k]])
    return np.sort(np.concatenate(chosen))


def _stratified_fraction(
    pool: np.ndarray, labels: np.ndarray, fraction: float, seed: int, salt: int
) -> np.ndarray:
    """``fraction`` of each class of ``pool`` (at least one of each class with two or more)."""
    out = []
    for cls in np.unique(labels[pool]):
        members = pool[labels[pool] == cls]
        perm = np.random.default_rng([seed, int(cls), salt]).permutation(len(members))
        k = int(round(fraction * len(members)))
        k = min(max(k, 1), len(members) - 1) if len(members) >= 2 else 0
        out.append(members[perm[:k]])
    return np.sort(np.concatenate(out)) if out else np.array([], dtype=np.int64)


def split_indices(
    labels: np.ndarray, validation_fraction: float, seed: int, max_eval: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified train / validation split of ``range(len(labels))``.

    Validation takes ``validation_fraction`` of each class (at least one example of each
    class with two or more), then, when ``max_eval`` is set, a stratified ``max_eval`` of
    those. The training pool is everything not drawn for validation. Depends only on the
    labels, the fraction, ``max_eval`` and ``seed``.
    """
    val_pool = _stratified_fraction(np.arange(len(labels)), labels, validation_fraction, seed, 1)
    train = np.setdiff1d(np.arange(len(labels)), val_pool)
    val_idx = val_pool
    if max_eval is not None and len(val_pool) > max_eval:
        val_idx = stratified_take(val_pool, labels, int(max_eval), seed)
    return train, val_idx


def split_with_test(
    labels: np.ndarray,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    max_eval: int | None = None,
    max_test: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed stratified train / validation / test split. Validation is :func:`split_indices`'
    (the same examples with or without a test split); the test split then takes
    ``test_fraction`` of each class of the *whole* dataset out of the training pool (capped
    stratified at ``max_test``). The three never overlap; the search selects on validation and
    never sees test."""
    train_pool, val = split_indices(labels, validation_fraction, seed, max_eval)
    share = min(0.99, test_fraction / max(1e-9, 1.0 - validation_fraction))
    test_pool = _stratified_fraction(train_pool, labels, share, seed, 2)
    train = np.setdiff1d(train_pool, test_pool)
    test = test_pool
    if max_test is not None and len(test_pool) > max_test:
        test = stratified_take(test_pool, labels, int(max_test), seed + 1)
    return train, val, test
