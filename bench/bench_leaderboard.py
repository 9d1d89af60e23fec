"""The arena leaderboard's fit: Bradley-Terry with bootstrap intervals over many votes.

    python bench/bench_leaderboard.py [--votes 100000] [--models 20] [--rounds 1000] [--repeat 5]

Synthetic votes from known strengths (10% ties), fitted by logtools/leaderboard.py:
- fit: the maximum-likelihood ratings alone (rounds=0);
- fit + bootstrap rounds: the same with --rounds resamples and their 95% intervals. Goal: <= 5 s;
- the same two with length control (a length-difference covariate per vote, so no pair aggregation).
  Goal: <= 5 s too;
- baseline: the bootstrap as a per-round loop would do it: each round resamples the votes, totals
  them per pair and is fitted alone by scipy's L-BFGS (--baseline-rounds rounds timed, scaled to
  --rounds).

Each row is the median of --repeat interleaved runs: wall clock, and the process's CPU time, which a
busy shared machine distorts least; the machine's load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from logtools.leaderboard import A_WINS, B_WINS, TIE, fit_leaderboard  # noqa: E402

console = Console()


def synthetic_votes(models: int, votes: int, seed: int) -> dict[str, np.ndarray]:
    """Votes between random pairs of models of known strength; longer answers win a little more."""
    rng = np.random.default_rng(seed)
    strength = rng.normal(0.0, 0.4, models)
    a = rng.integers(0, models, votes)
    b = (a + rng.integers(1, models, votes)) % models
    length = rng.normal(0.0, 300.0, votes)
    z = np.log(10.0) * (strength[a] - strength[b]) + 0.3 * length / 300.0
    won = rng.random(votes) < 1.0 / (1.0 + np.exp(-z))
    outcome = np.where(rng.random(votes) < 0.1, TIE, np.where(won, A_WINS, B_WINS))
    return {"a": a, "b": b, "outcome": outcome, "length": length}


def scipy_baseline(names: list[str], votes: dict[str, np.ndarray], rounds: int, seed: int) -> None:
    """Refit each bootstrap round separately with scipy's L-BFGS on per-pair win and vote totals."""
    from scipy.optimize import minimize  # a test dependency: only the baseline needs it

    m, n = len(names), len(votes["a"])
    score = np.select([votes["outcome"] == A_WINS, votes["outcome"] == B_WINS], [1.0, 0.0], 0.5)
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        pick = rng.integers(0, n, n)
        pair = votes["a"][pick] * m + votes["b"][pick]
        wins = np.bincount(pair, score[pick], m * m)
        total = np.bincount(pair, minlength=m * m).astype(float)
        i, j = np.divmod(np.flatnonzero(total), m)
        w, t = wins[total > 0], total[total > 0]

        def loss(s: np.ndarray, i: np.ndarray = i, j: np.ndarray = j, w: np.ndarray = w, t: np.ndarray = t):
            z = s[i] - s[j]
            r = t / (1.0 + np.exp(-z)) - w
            return float(np.sum(t * np.logaddexp(0.0, z) - w * z)), np.bincount(i, r, m) - np.bincount(
                j, r, m
            )

        minimize(loss, np.zeros(m), jac=True, method="L-BFGS-B")


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one run (CPU time is what a busy shared machine distorts least)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(args: argparse.Namespace) -> None:
    names = [f"model-{k:02d}" for k in range(args.models)]
    votes = synthetic_votes(args.models, args.votes, seed=1)
    cases: dict[str, Callable[[], object]] = {
        "fit": lambda: fit_leaderboard(names, votes["a"], votes["b"], votes["outcome"], rounds=0),
        f"fit + {args.rounds} bootstrap rounds": lambda: fit_leaderboard(
            names, votes["a"], votes["b"], votes["outcome"], rounds=args.rounds, seed=2
        ),
        "length control: fit": lambda: fit_leaderboard(
            names, votes["a"], votes["b"], votes["outcome"], length_diff=votes["length"], rounds=0
        ),
        f"length control: fit + {args.style_rounds} rounds": lambda: fit_leaderboard(
            names,
            votes["a"],
            votes["b"],
            votes["outcome"],
            length_diff=votes["length"],
            rounds=args.style_rounds,
            seed=2,
        ),
        f"baseline: {args.rounds} rounds one by one": lambda: scipy_baseline(
            names, votes, args.baseline_rounds, seed=2
        ),
    }
    load_before = os.getloadavg()[0]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(args.repeat):  # interleaved, so drift in the machine's speed hits every case alike
        for name, run in cases.items():
            times[name].append(timed(run))
    load_after = os.getloadavg()[0]
    scale = args.rounds / args.baseline_rounds
    table = Table(
        title=f"leaderboard: {args.votes:,} votes, {args.models} models, {os.cpu_count()} cores, "
        f"load {load_before:.1f} -> {load_after:.1f}"
    )
    for column in ("measure", "median s", "min s", "max s", "median CPU s"):
        table.add_column(column, justify="right")
    for name, runs in times.items():
        factor = scale if name.startswith("baseline") else 1.0
        wall, cpu = [w for w, _ in runs], [c for _, c in runs]
        stats = (statistics.median(wall), min(wall), max(wall), statistics.median(cpu))
        table.add_row(name, *(f"{v * factor:.3f}" for v in stats))
    console.print(table)
    console.print(
        f"median of {args.repeat} interleaved runs; goal: fit + {args.rounds} rounds <= 5 s, with length "
        "control too. Bootstrap rounds are solved together: multinomial counts over the distinct votes, "
        "batched Newton steps warm-started from the point fit (whose first step shares the point fit's "
        "per-vote probabilities across rounds). Baseline: each round resampled and "
        f"fitted alone by scipy's L-BFGS on pair totals ({args.baseline_rounds} rounds timed, scaled)."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--votes", type=int, default=100_000, help="counted votes")
    parser.add_argument("--models", type=int, default=20, help="models in the arena")
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds")
    parser.add_argument("--style-rounds", type=int, default=1000, help="bootstrap rounds with length control")
    parser.add_argument("--baseline-rounds", type=int, default=50, help="rounds timed for the baseline")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each case; the table shows the median")
    main(parser.parse_args())
