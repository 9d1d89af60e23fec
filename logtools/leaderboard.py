"""The arena leaderboard: a Bradley-Terry fit of pairwise votes with bootstrap intervals.

Pure numpy, no bus and no I/O: the caller turns counted votes into arrays. Strength s is in base-10
units, P(a beats b) = 1 / (1 + 10 ** (s_b - s_a)), shown as rating = 400 * s + 1000 (the Elo scale);
the fit works in natural units theta = s * ln(10). See docs/leaderboard.md for the method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import msgspec
import numpy as np
import numpy.typing as npt

A_WINS, B_WINS, TIE = 0, 1, 2  # a vote's outcome; "both bad" votes are the caller's to drop
SCALE = 400.0 / math.log(10.0)  # rating points per natural-log unit of strength
BASE_RATING = 1000.0
RIDGE = 0.01  # L2 on theta (a N(0, 10^2) prior), only where a maximum likelihood does not exist
MAX_STEP = 4.0  # a Newton step moves no strength by more than this (natural units)
# Newton converges quadratically: after a step of size d the error is near d squared (natural units)
TOL = 1e-6  # the point fit: ~1e-12 left
TOL_BOOTSTRAP = 1e-3  # a bootstrap round: ~1e-6 left, 0.0002 rating points
MAX_ITER = 100
SURE_VOTES = 50  # a pair's side that scored this often in the votes scores in every resample (see _sure_mle)
CHUNK_CELLS = 100_000  # rounds x cells solved in one batch: arrays of ~800 KB stay in a core's cache

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


class LeaderboardError(ValueError):
    """Votes that no leaderboard can be computed from (none, malformed, or models never compared)."""


class Row(msgspec.Struct, frozen=True):
    """One model's line: rating, its 95% interval, rank and how many counted votes it was in."""

    model: str
    rating: float
    lower: float
    upper: float
    rank: int
    battles: int


class Leaderboard(msgspec.Struct, frozen=True):
    """The fit's result, best rating first; models without votes are listed in `unrated`."""

    rows: tuple[Row, ...]
    anchor: str
    votes: int
    rounds: int
    regularised: bool  # the point fit needed the ridge (a model won or lost every vote it was in)
    length_coef: float | None  # with length control: rating points per root-mean-square length difference
    unrated: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cells:
    """Distinct votes, each oriented so that i < j: y is i's score (1, 0, 0.5), x the covariate."""

    i: Ints
    j: Ints
    y: Floats
    x: Floats | None
    weight: Floats  # the vote weight of one vote in this cell
    count: Floats  # how many votes fall in this cell
    starts: Ints  # the first cell of each pair (cells are sorted by pair)
    sizes: Ints  # the cells of each pair
    pair_i: Ints
    pair_j: Ints
    n_models: int

    @cached_property
    def incidence(self) -> Floats:
        """Pairs x models: +1 at i, -1 at j (a pair's logit is incidence @ theta)."""
        npairs = len(self.starts)
        out = np.zeros((npairs, self.n_models))
        out[np.arange(npairs), self.pair_i] = 1.0
        out[np.arange(npairs), self.pair_j] = -1.0
        return out

    @cached_property
    def outer(self) -> Floats:
        """Pairs x models²: each pair's incidence outer product (its part of the Hessian), flattened."""
        return np.einsum("pi,pj->pij", self.incidence, self.incidence).reshape(len(self.starts), -1)


def _check(
    names: Sequence[str], a: Ints, b: Ints, outcome: Ints, weight: Floats, length_diff: Floats | None
) -> None:
    n = len(a)
    if n == 0:
        raise LeaderboardError("no votes")
    if len(set(names)) != len(names):
        raise LeaderboardError("model names repeat")
    arrays = [len(b), len(outcome), len(weight)] + ([] if length_diff is None else [len(length_diff)])
    if any(m != n for m in arrays):
        raise LeaderboardError("the vote arrays differ in length")
    if a.min() < 0 or b.min() < 0 or max(a.max(), b.max()) >= len(names):
        raise LeaderboardError("a vote names a model index outside the model list")
    if np.any(a == b):
        raise LeaderboardError("a vote pits a model against itself")
    if not np.isin(outcome, (A_WINS, B_WINS, TIE)).all():
        raise LeaderboardError("an outcome is not a-wins (0), b-wins (1) or tie (2)")
    if not (np.isfinite(weight).all() and (weight > 0).all()):
        raise LeaderboardError("vote weights must be positive and finite")
    if length_diff is not None and not np.isfinite(length_diff).all():
        raise LeaderboardError("a length difference is not finite")


def _cells(a: Ints, b: Ints, outcome: Ints, weight: Floats, x: Floats | None, n_models: int) -> Cells:
    """Orient every vote to i < j and group equal votes into cells, sorted by pair."""
    flip = a > b
    i, j = np.where(flip, b, a), np.where(flip, a, b)
    y = np.select([outcome == A_WINS, outcome == B_WINS], [1.0, 0.0], 0.5)
    y = np.where(flip, 1.0 - y, y)
    cols = [i.astype(np.float64), j.astype(np.float64), y, weight]
    if x is not None:
        cols.append(np.where(flip, -x, x))
    rows = np.column_stack(cols)[np.lexsort(cols[::-1])]  # sorted by i, then j, then the rest
    first = np.flatnonzero(np.r_[True, (rows[1:] != rows[:-1]).any(axis=1)])
    keys, counts = rows[first], np.diff(np.r_[first, len(rows)])
    ci, cj = keys[:, 0].astype(np.int64), keys[:, 1].astype(np.int64)
    pair = ci * n_models + cj
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    return Cells(
        i=ci,
        j=cj,
        y=keys[:, 2],
        x=keys[:, 4] if x is not None else None,
        weight=keys[:, 3],
        count=counts.astype(np.float64),
        starts=starts,
        sizes=np.diff(np.r_[starts, len(ci)]),
        pair_i=ci[starts],
        pair_j=cj[starts],
        n_models=n_models,
    )


def _strongly_connected(cells: Cells, wc: Floats) -> npt.NDArray[np.bool_]:
    """Per round: does every model both beat and lose to the rest, through chains (MLE exists)?"""
    rounds, m = wc.shape[0], cells.n_models
    won = np.add.reduceat(wc * cells.y, cells.starts, axis=1) > 0  # i scored against j
    lost = np.add.reduceat(wc * (1.0 - cells.y), cells.starts, axis=1) > 0
    reach = np.zeros((rounds, m, m))
    reach[:, np.arange(m), np.arange(m)] = 1.0
    reach[:, cells.pair_i, cells.pair_j] = won
    reach[:, cells.pair_j, cells.pair_i] = lost
    for _ in range(max(1, math.ceil(math.log2(max(m, 2))))):
        reach = np.minimum(reach @ reach, 1.0)
    return np.asarray((reach > 0).all(axis=(1, 2)))


def _logistic(z: Floats) -> Floats:
    """The logistic function without overflow, computed in place of z."""
    z *= 0.5
    np.tanh(z, out=z)
    z += 1.0
    z *= 0.5
    return z


def _newton(
    cells: Cells,
    counts: Floats,
    theta: Floats,
    beta: Floats,
    ridge: Floats,
    tol: float,
    at_start: tuple[Floats, Floats] | None = None,
) -> tuple[Floats, Floats]:
    """Maximise each round's (ridge-penalised) log-likelihood; rounds x models, rounds x (0 or 1).

    `at_start`: each cell's (y - p, p (1 - p)) at the start, when every round starts at the same point
    (a bootstrap): the first step then needs no logistic function per round and cell."""
    m, x = cells.n_models, cells.x
    wc = counts * cells.weight
    incidence, outer = cells.incidence, cells.outer
    gauge = np.ones((m, m)) * max(1.0, float(wc.sum(axis=1).max()) / m)  # fixes the sum-zero direction
    active = np.ones(len(theta), dtype=bool)
    for iteration in range(MAX_ITER):
        everyone = bool(active.all())
        t, bt, lam = theta[active], beta[active], ridge[active]
        w = wc if everyone else wc[active]
        if iteration == 0 and at_start is not None:
            resid, curv = w * at_start[0], w * at_start[1]
        else:
            logit = np.repeat(t[:, cells.pair_i] - t[:, cells.pair_j], cells.sizes, axis=1)
            if x is not None:
                logit += bt * x
            p = _logistic(logit)
            resid = cells.y - p
            resid *= w
            curv = 1.0 - p
            curv *= p
            curv *= w
        grad = np.add.reduceat(resid, cells.starts, axis=1) @ incidence - lam[:, None] * t
        hess = (np.add.reduceat(curv, cells.starts, axis=1) @ outer).reshape(-1, m, m)
        hess = hess + gauge + lam[:, None, None] * np.eye(m)
        if x is not None:
            grad = np.concatenate([grad, np.einsum("rc,c->r", resid, x)[:, None]], axis=1)
            curv_x = curv
            curv_x *= x  # curv is not needed any more
            cross = np.add.reduceat(curv_x, cells.starts, axis=1) @ incidence
            corner = np.einsum("rc,c->r", curv_x, x)[:, None, None] + 1e-12
            full = np.empty((len(t), m + 1, m + 1))
            full[:, :m, :m], full[:, :m, m], full[:, m, :m], full[:, m:, m:] = hess, cross, cross, corner
            hess = full
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        size = np.abs(step).max(axis=1)
        step *= np.minimum(1.0, MAX_STEP / np.maximum(size, 1e-300))[:, None]
        idx = np.flatnonzero(active)
        theta[idx] = t + step[:, :m]
        if x is not None:
            beta[idx] = bt + step[:, m:]
        active[idx[size < tol]] = False
        if not active.any():
            break
    return theta, beta


def _fit(
    cells: Cells,
    counts: Floats,
    start: tuple[Floats, Floats] | None = None,
    tol: float = TOL,
    at_start: tuple[Floats, Floats] | None = None,
    sure_mle: bool = False,
) -> tuple[Floats, Floats, Floats]:
    """Fit every round of counts (rounds x cells); the ridge only in rounds without an MLE (`sure_mle`:
    the caller knows every round has one)."""
    rounds = counts.shape[0]
    if sure_mle:
        ridge = np.zeros(rounds)
    else:
        ridge = np.where(_strongly_connected(cells, counts * cells.weight), 0.0, RIDGE)
    if start is None:
        theta, beta = np.zeros((rounds, cells.n_models)), np.zeros((rounds, 1))
    else:
        theta, beta = np.repeat(start[0][None], rounds, 0), np.repeat(start[1][None], rounds, 0)
    theta, beta = _newton(cells, counts, theta, beta, ridge, tol, at_start)
    return theta - theta.mean(axis=1, keepdims=True), beta, ridge


def _connected(m: int, i: Ints, j: Ints) -> bool:
    """Is the graph of models that met (directly or through others) one piece?"""
    label = np.arange(m)
    while True:  # label propagation: every model takes the smallest label among those it met
        low = np.minimum(label[i], label[j])
        new = label.copy()
        np.minimum.at(new, i, low)
        np.minimum.at(new, j, low)
        new = new[new]
        if np.array_equal(new, label):
            return bool((label == label[0]).all())
        label = new


def fit_leaderboard(
    names: Sequence[str],
    model_a: npt.ArrayLike,
    model_b: npt.ArrayLike,
    outcome: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    length_diff: npt.ArrayLike | None = None,
    anchor: str | None = None,
    rounds: int = 1000,
    seed: int = 0,
) -> Leaderboard:
    """Bradley-Terry ratings of `names` from votes (indices into names), with bootstrap 95% intervals."""
    a = np.asarray(model_a, dtype=np.int64).ravel()
    b = np.asarray(model_b, dtype=np.int64).ravel()
    out = np.asarray(outcome, dtype=np.int64).ravel()
    w = np.ones(len(a)) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    x = None if length_diff is None else np.asarray(length_diff, dtype=np.float64).ravel()
    names = list(names)
    _check(names, a, b, out, w, x)
    if rounds < 0:
        raise LeaderboardError("rounds must be 0 or more")
    anchor = names[0] if anchor is None else anchor
    if anchor not in names:
        raise LeaderboardError(f"the anchor {anchor!r} is not one of the models")
    battles = np.bincount(a, minlength=len(names)) + np.bincount(b, minlength=len(names))
    rated = np.flatnonzero(battles > 0)
    if anchor not in (names[int(k)] for k in rated):
        raise LeaderboardError(f"the anchor {anchor!r} has no votes")
    index = np.full(len(names), -1)
    index[rated] = np.arange(len(rated))
    a, b = index[a], index[b]
    if not _connected(len(rated), a, b):
        raise LeaderboardError("some models were never compared, directly or through others, with the rest")
    if x is not None:
        spread = float(np.sqrt(np.mean(x**2)))
        x = x / spread if spread > 0 else None  # a constant zero covariate carries nothing
    cells = _cells(a, b, out, w, x, len(rated))
    theta, beta, ridge = _fit(cells, cells.count[None])
    point, coef = theta[0], beta[0]
    samples = _bootstrap(cells, point, coef, rounds, seed)
    shift = point[index[names.index(anchor)]]
    rating = BASE_RATING + SCALE * (point - shift)
    if rounds:
        scaled = BASE_RATING + SCALE * (samples - shift)
        lower, upper = np.percentile(scaled, 2.5, axis=0), np.percentile(scaled, 97.5, axis=0)
    else:
        lower, upper = rating.copy(), rating.copy()
    rank = 1 + (lower[None, :] > upper[:, None]).sum(axis=1)
    rows = [
        Row(names[int(k)], float(rating[r]), float(lower[r]), float(upper[r]), int(rank[r]), int(battles[k]))
        for r, k in enumerate(rated)
    ]
    rows.sort(key=lambda row: (-row.rating, row.model))
    return Leaderboard(
        rows=tuple(rows),
        anchor=anchor,
        votes=len(a),
        rounds=rounds,
        regularised=bool(ridge[0] > 0),
        length_coef=None if length_diff is None else float(SCALE * coef[0]),
        unrated=tuple(names[int(k)] for k in np.flatnonzero(battles == 0)),
    )


def _bootstrap(cells: Cells, point: Floats, coef: Floats, rounds: int, seed: int) -> Floats:
    """Refit `rounds` resamples of the votes (multinomial counts over the cells), warm-started."""
    rng = np.random.default_rng(seed)
    total = int(cells.count.sum())
    share = cells.count / total
    # Many cells of one vote each (length control): drawing votes and counting them per cell is the
    # same multinomial, and cheaper than numpy's per-category binomials.
    by_vote = (
        np.repeat(np.arange(len(share)), cells.count.astype(np.int64)) if len(share) * 8 > total else None
    )
    single = by_vote is not None and len(by_vote) == len(share)  # every cell one vote: a draw is its cell
    batch = max(1, CHUNK_CELLS // len(share))
    logit = point[cells.i] - point[cells.j] + (coef[0] * cells.x if cells.x is not None else 0.0)
    p = _logistic(np.asarray(logit, dtype=np.float64).copy())
    at_start = (cells.y - p, p * (1.0 - p))  # every round starts at the point fit
    sure = _sure_mle(cells)
    out = []
    for done in range(0, rounds, batch):
        size = min(batch, rounds - done)
        if by_vote is None:
            counts = rng.multinomial(total, share, size=size).astype(np.float64)
        else:
            drawn = rng.integers(0, total, (size, total))
            if not single:
                drawn = by_vote[drawn]
            drawn += len(share) * np.arange(size)[:, None]
            counts = np.bincount(drawn.ravel(), minlength=size * len(share)).reshape(size, -1).astype(float)
        theta, _, _ = _fit(
            cells,
            counts,
            start=(point, coef),
            tol=TOL_BOOTSTRAP,
            at_start=at_start,
            sure_mle=sure,
        )
        out.append(theta)
    return np.concatenate(out) if out else np.zeros((0, cells.n_models))


def _sure_mle(cells: Cells) -> bool:
    """Whether every resample of the votes has a maximum-likelihood fit, but for odds below 1e-20: each
    side of every pair that met scored in at least SURE_VOTES votes, so a resample keeps them all (a
    direction is lost with probability about exp(-SURE_VOTES)) and the graph stays strongly connected."""
    scored = np.add.reduceat(cells.count * (cells.y > 0), cells.starts)
    conceded = np.add.reduceat(cells.count * (cells.y < 1), cells.starts)
    return bool(min(scored.min(), conceded.min()) >= SURE_VOTES)
