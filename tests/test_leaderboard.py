"""The leaderboard fit: recovery of known strengths, interval coverage, a reference fit, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from logtools.leaderboard import A_WINS, B_WINS, TIE, Leaderboard, LeaderboardError, fit_leaderboard


def _votes(
    strength: np.ndarray, n: int, rng: np.random.Generator, tie: float = 0.1
) -> tuple[np.ndarray, ...]:
    """Votes from known base-10 strengths: a tie with probability `tie`, else a Bradley-Terry draw."""
    m = len(strength)
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    p = 1.0 / (1.0 + 10.0 ** (strength[b] - strength[a]))
    u = rng.random(n)
    outcome = np.where(u < tie, TIE, np.where(rng.random(n) < p, A_WINS, B_WINS))
    return a, b, outcome


def _by_model(board: Leaderboard, names: list[str], field: str) -> np.ndarray:
    value = {row.model: getattr(row, field) for row in board.rows}
    return np.array([value[name] for name in names])


def _names(m: int) -> list[str]:
    return [f"model-{k}" for k in range(m)]


def _reference(names: list[str], a, b, outcome, x=None) -> tuple[np.ndarray, float]:
    """scipy's BFGS on the per-vote log-likelihood (a tie = half a win each), the first model fixed at 0."""
    y = np.select([outcome == A_WINS, outcome == B_WINS], [1.0, 0.0], 0.5)
    m = len(names)

    def loss(free: np.ndarray) -> tuple[float, np.ndarray]:
        s = np.r_[0.0, free[: m - 1]]
        z = s[a] - s[b] + (free[m - 1] * x if x is not None else 0.0)
        nll = np.sum(np.logaddexp(0.0, z) - y * z) / len(y)
        r = (1.0 / (1.0 + np.exp(-z)) - y) / len(y)
        g = np.bincount(a, r, m) - np.bincount(b, r, m)
        grad = g[1:] if x is None else np.r_[g[1:], np.sum(r * x)]
        return float(nll), grad

    start = np.zeros(m - 1 + (x is not None))
    res = minimize(loss, start, jac=True, method="BFGS", options={"gtol": 1e-13, "maxiter": 10_000})
    theta = np.r_[0.0, res.x[: m - 1]]
    return theta / np.log(10.0), (float(res.x[-1]) if x is not None else 0.0)


def test_the_fit_recovers_the_order_of_known_strengths() -> None:
    rng = np.random.default_rng(7)
    strength = np.linspace(-0.6, 0.6, 8)
    rng.shuffle(strength)
    names = _names(8)
    board = fit_leaderboard(names, *_votes(strength, 20_000, rng), rounds=100, seed=1)
    assert [row.model for row in board.rows] == [names[k] for k in np.argsort(-strength)]
    assert [row.rank for row in board.rows] == list(range(1, 9))  # 70 points apart: no overlaps
    assert board.rows[0].lower <= board.rows[0].rating <= board.rows[0].upper
    assert not board.regularised
    assert sum(row.battles for row in board.rows) == 2 * board.votes == 40_000


def test_intervals_cover_the_true_strengths_in_90_percent_of_runs() -> None:
    names, covered, total = _names(6), 0, 0
    for seed in range(25):
        rng = np.random.default_rng(100 + seed)
        strength = rng.normal(0.0, 0.3, 6)
        # no ties: a tie drawn apart from the strengths would pull the fitted gaps toward 0
        board = fit_leaderboard(names, *_votes(strength, 2_000, rng, tie=0.0), rounds=300, seed=seed)
        # the intervals are of each strength against the field's mean, shown shifted so the anchor's
        # point estimate sits at 1000: put the true strengths in the same frame
        fitted = (_by_model(board, names, "rating") - 1000.0) / 400.0
        shift = fitted[0] - fitted.mean()
        truth = 1000.0 + 400.0 * (strength - strength.mean() - shift)
        lower, upper = _by_model(board, names, "lower"), _by_model(board, names, "upper")
        covered += int(((lower <= truth) & (truth <= upper)).sum())
        total += len(names)
    assert covered / total >= 0.90, covered / total


def test_the_strengths_equal_a_scipy_reference_fit() -> None:
    rng = np.random.default_rng(3)
    names = _names(7)
    a, b, outcome = _votes(rng.normal(0.0, 0.4, 7), 3_000, rng, tie=0.2)
    board = fit_leaderboard(names, a, b, outcome, rounds=0)
    mine = (_by_model(board, names, "rating") - 1000.0) / 400.0
    reference, _ = _reference(names, a, b, outcome)
    np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-6)
    assert board.rows[[row.model for row in board.rows].index(names[0])].rating == 1000.0


def test_length_control_equals_a_scipy_reference_fit() -> None:
    rng = np.random.default_rng(4)
    names = _names(5)
    strength = rng.normal(0.0, 0.4, 5)
    a, b, _ = _votes(strength, 3_000, rng)
    length = rng.normal(0.0, 300.0, 3_000)  # longer answers win more often, whatever the model
    z = np.log(10.0) * (strength[a] - strength[b]) + 0.5 * length / 300.0
    outcome = np.where(rng.random(3_000) < 1.0 / (1.0 + np.exp(-z)), A_WINS, B_WINS)
    board = fit_leaderboard(names, a, b, outcome, length_diff=length, rounds=20)
    mine = (_by_model(board, names, "rating") - 1000.0) / 400.0
    scaled = length / np.sqrt(np.mean(length**2))
    reference, coef = _reference(names, a, b, outcome, scaled)
    np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-6)
    assert board.length_coef == pytest.approx(400.0 / np.log(10.0) * coef, abs=1e-4)
    assert board.length_coef is not None and board.length_coef > 50  # about 0.5 nats = 87 points
    plain = fit_leaderboard(names, a, b, outcome, rounds=0)
    assert plain.length_coef is None
    flat = fit_leaderboard(names, a, b, outcome, length_diff=np.zeros(3_000), rounds=0)
    assert flat.length_coef == 0.0 and flat.rows == plain.rows  # equal lengths: nothing to control


def test_the_anchor_sits_at_1000_and_the_scale_is_elo() -> None:
    # 3 wins to 1 for a: P = 0.75, so the gap is 400 * log10(3) = 190.8 points
    names = ["a", "b"]
    board = fit_leaderboard(names, [0, 0, 0, 1], [1, 1, 1, 0], [A_WINS, A_WINS, A_WINS, A_WINS], anchor="b")
    rating = dict(zip(["a", "b"], _by_model(board, names, "rating"), strict=True))
    assert rating["b"] == 1000.0
    assert rating["a"] == pytest.approx(1000.0 + 400.0 * np.log10(3.0), abs=1e-6)


def test_a_tie_is_half_a_win_each() -> None:
    names = ["a", "b"]
    board = fit_leaderboard(names, [0, 1], [1, 0], [TIE, TIE], rounds=50)
    assert [row.rating for row in board.rows] == [1000.0, 1000.0]
    assert [(row.lower, row.upper, row.rank) for row in board.rows] == [(1000.0, 1000.0, 1)] * 2
    # a win and two ties: a scores 2 of 3, P = 2/3, odds 2, so the gap is 400 * log10(2)
    board = fit_leaderboard(names, [0, 0, 1], [1, 1, 0], [A_WINS, TIE, TIE], rounds=0)
    assert board.rows[0].model == "a"
    assert board.rows[0].rating - board.rows[1].rating == pytest.approx(400.0 * np.log10(2.0), abs=1e-6)


def test_sides_and_weights_are_what_they_say() -> None:
    rng = np.random.default_rng(5)
    names = _names(4)
    a, b, outcome = _votes(np.array([0.0, 0.1, 0.3, -0.2]), 500, rng)
    board = fit_leaderboard(names, a, b, outcome, rounds=0)
    swapped = np.select([outcome == A_WINS, outcome == B_WINS], [B_WINS, A_WINS], TIE)
    same = fit_leaderboard(names, b, a, swapped, rounds=0)
    np.testing.assert_allclose(_by_model(board, names, "rating"), _by_model(same, names, "rating"), atol=1e-9)
    doubled = fit_leaderboard(
        names, np.r_[a, a[:50]], np.r_[b, b[:50]], np.r_[outcome, outcome[:50]], rounds=0
    )
    weighted = fit_leaderboard(names, a, b, outcome, weights=np.r_[np.full(50, 2.0), np.ones(450)], rounds=0)
    np.testing.assert_allclose(
        _by_model(doubled, names, "rating"), _by_model(weighted, names, "rating"), atol=1e-9
    )


def test_the_same_seed_gives_the_same_intervals() -> None:
    rng = np.random.default_rng(6)
    names = _names(5)
    votes = _votes(rng.normal(0.0, 0.2, 5), 1_000, rng)
    first, again = (fit_leaderboard(names, *votes, rounds=200, seed=9) for _ in range(2))
    other = fit_leaderboard(names, *votes, rounds=200, seed=10)
    assert first == again
    assert first.rows != other.rows
    assert [row.rating for row in first.rows] == [row.rating for row in other.rows]


def test_rank_counts_the_models_surely_better() -> None:
    # a and b are close with few votes (overlapping intervals); c is far below both
    names = ["a", "b", "c"]
    a = [0, 0, 1, 1, 0, 0, 1, 1] + [0] * 40 + [1] * 40
    b = [1, 1, 0, 0, 1, 1, 0, 0] + [2] * 40 + [2] * 40
    outcome = [A_WINS, B_WINS, A_WINS, B_WINS, A_WINS, A_WINS, B_WINS, A_WINS] + (
        [A_WINS] * 36 + [B_WINS] * 4
    ) * 2
    board = fit_leaderboard(names, a, b, outcome, rounds=300, seed=2)
    ranks = {row.model: row.rank for row in board.rows}
    assert ranks == {"a": 1, "b": 1, "c": 3}
    c = board.rows[2]
    assert all(row.lower > c.upper for row in board.rows[:2])


def test_a_model_that_won_every_vote_gets_a_finite_rating_by_the_ridge() -> None:
    names = ["a", "b", "c"]
    board = fit_leaderboard(names, [0, 0, 1, 2], [1, 2, 2, 1], [A_WINS, A_WINS, A_WINS, A_WINS], rounds=50)
    assert board.regularised
    assert [row.model for row in board.rows][0] == "a"
    assert all(np.isfinite([row.rating, row.lower, row.upper]).all() for row in board.rows)
    assert board.rows[0].rating < 1000.0 + 400.0 * 10  # finite and not absurd


def test_models_without_votes_and_pairs_never_met() -> None:
    names = ["a", "b", "c", "idle"]
    # a-c never met: a and c are compared through b
    board = fit_leaderboard(names, [0, 1, 1, 2], [1, 0, 2, 1], [A_WINS, TIE, A_WINS, TIE], rounds=20)
    assert board.unrated == ("idle",)
    assert [row.model for row in board.rows] == ["a", "b", "c"]
    assert {row.model: row.battles for row in board.rows} == {"a": 2, "b": 4, "c": 2}


@pytest.mark.parametrize(
    ("names", "votes", "kwargs", "message"),
    [
        (["a", "b"], ([], [], []), {}, "no votes"),
        (["solo"], ([], [], []), {}, "no votes"),
        (["a", "b"], ([0], [0], [A_WINS]), {}, "against itself"),
        (["a", "b"], ([0], [2], [A_WINS]), {}, "outside the model list"),
        (["a", "b"], ([0], [1], [3]), {}, "not a-wins"),
        (["a", "b"], ([0, 1], [1], [A_WINS]), {}, "differ in length"),
        (["a", "b"], ([0], [1], [A_WINS]), {"weights": [0.0]}, "positive"),
        (["a", "a"], ([0], [1], [A_WINS]), {}, "repeat"),
        (["a", "b"], ([0], [1], [A_WINS]), {"anchor": "z"}, "not one of the models"),
        (["a", "b", "c"], ([0], [1], [A_WINS]), {"anchor": "c"}, "has no votes"),
        (["a", "b", "c", "d"], ([0, 2], [1, 3], [TIE, TIE]), {}, "never compared"),
        (["a", "b"], ([0], [1], [A_WINS]), {"length_diff": [np.nan]}, "not finite"),
    ],
)
def test_bad_input_is_a_clear_error(names, votes, kwargs, message) -> None:
    with pytest.raises(LeaderboardError, match=message):
        fit_leaderboard(names, *votes, rounds=10, **kwargs)
    assert issubclass(LeaderboardError, ValueError)
