"""Evolutionary search over Euler step times, after AutoDiffusion.

AutoDiffusion (Li, Li, Wang, Zhang, Ma, Ji et al., "AutoDiffusion: Training-Free
Optimization of Time Steps and Architectures for Automated Diffusion Model
Acceleration", ICCV 2023, arXiv 2309.10438; code lilijiangg/AutoDiffusion,
``scripts/search_ea.py``) searches the sampler's time steps with a plain evolutionary
algorithm: a population of candidate step sequences drawn from the model's discrete
timesteps, the best ``k`` of everything seen so far kept as parents, new candidates made
by *mutation* (each step moves, with some probability, to an unused timestep) and
*uniform crossover* of two parents (each position from either parent, then sorted),
the population topped up with random candidates, and already-visited candidates skipped.

Here (time convention of bossflow: ``t = 0`` noise, ``t = 1`` data):

* **Search space: subsets of the base grid.** A K-step candidate is ``K - 1`` distinct
  interior indices of the grid ``g_0 = 0 < ... < g_N = 1``, with ``0`` and ``N`` fixed at
  the ends; its schedule is ``g`` at those indices. Times are not continuous: a finer
  grid gives finer times (see :mod:`bossflow.search.refine` for continuous times).
* **Fitness** is the endpoint MSE (per dimension, averaged over the search noises) of Euler
  along the candidate against the teacher's endpoint from the same noises, the fine Euler
  trajectory on the grid (:func:`bossflow.fine_trajectory`, ``xs[-1]``), computed once.
  A whole generation is evaluated at once: the rows of candidate p carry that candidate's
  own times, so each Euler step is one batched model call for every candidate.
* **Initial population:** the uniform schedule and the EDM and shift-3 families, each
  snapped to the grid, mutations of the uniform candidate (AutoDiffusion's
  ``use_ddim_init_x``), and random candidates.
* **Elitism:** parents are the best candidates of everything evaluated so far, and the
  result is the best of everything evaluated, so it is never worse on the search noises
  than the best initial candidate (uniform included).
* **Small spaces are enumerated:** when ``C(N - 1, K - 1)`` candidates fit in the
  evaluation budget, every one is evaluated and the result is the exact optimum on the grid.
* **Mutation** moves each interior index, with probability ``mutation_prob``, either to a
  random unused index (AutoDiffusion's move) or by a few grid steps (a local move added
  here, which helps on a fine grid); at least one index moves.

What is simplified: AutoDiffusion searches the model architecture (which layers to skip)
together with the steps; that is out of scope, only step times are searched. Its fitness
is the FID of generated samples against real data statistics; here it is the endpoint
error against the teacher, which needs no data. Its random-forest pre-filter is left out.

Cost, in model rows (one row = one sample through the model), for S search noises
(``samples``, default at most 64 of the given noises), a grid of N steps and budget K:

* teacher: ``N S`` (``substeps`` times more with sub-steps), once for all budgets;
* search: ``K S`` per evaluated candidate, at most ``population * (generations + 1)``
  candidates per budget (default 32 x 41 = 1,312, i.e. at most ``1,312 K S`` rows:
  about 0.67 M rows for K = 8 and S = 64); duplicates are never evaluated twice.

Every schedule's ``meta`` states these counts: ``teacher_rows`` and ``teacher_calls`` (the
shared teacher, once per call), ``search_rows`` and ``search_calls`` (this budget), and
``evaluations`` (distinct candidates scored).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.bellman import check_budget
from ..core.errors import BossflowError
from ..core.noise import validate_noise
from ..core.schedules import SCHEDULE_FAMILIES, Schedule, validate_times
from ..core.solvers import NFECounter, batched_trajectory, select_cond

FAMILIES = ("uniform", "edm", "shift")


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise BossflowError(f"{what} must be an integer of at least {minimum}, got {value!r}.")
    return int(value)


def snap_to_grid(grid: Any, times: Any) -> np.ndarray:
    """Grid indices nearest to ``times`` (K + 1 of them, 0 to 1), made strictly increasing.

    Args:
        grid: ``(N + 1,)`` base grid, 0 (noise) to 1 (data): a :class:`Schedule`, tensor, array or list.
        times: ``(K + 1,)`` increasing times with ``K <= N``, in any of those forms.

    Returns:
        ``(K + 1,)`` int64 indices ``0 = i_0 < ... < i_K = N``.

    >>> snap_to_grid(np.linspace(0, 1, 11), [0.0, 0.33, 0.66, 1.0]).tolist()
    [0, 3, 7, 10]
    """
    grid = validate_times(grid, "base grid")
    times = validate_times(times)
    n, k = grid.size - 1, times.size - 1
    pos = np.clip(np.searchsorted(grid, times), 1, n)
    nearest = np.where(np.abs(grid[pos - 1] - times) <= np.abs(grid[pos] - times), pos - 1, pos)
    idx = nearest.astype(np.int64)
    idx[0], idx[-1] = 0, n
    # Room for the remaining steps on both sides: i_j in [j, N - (K - j)].
    for j in range(1, k):
        idx[j] = min(max(idx[j], idx[j - 1] + 1), n - (k - j))
    return idx


def _family_candidates(grid: np.ndarray, nfe: int, families: Sequence[str]) -> list[tuple[int, ...]]:
    out = []
    for name in families:
        idx = snap_to_grid(grid, SCHEDULE_FAMILIES[name](nfe).times)
        out.append(tuple(int(i) for i in idx[1:-1]))
    return out


class _Evaluator:
    """Endpoint MSE of Euler along many grid paths at once, with a cache of visited candidates."""

    def __init__(
        self, model: Callable[..., Tensor], noise: Tensor, target: Tensor, grid: np.ndarray, nfe: int,
        cond: dict, rows: int,
    ) -> None:
        self.model, self.noise, self.target, self.grid, self.nfe = model, noise, target, grid, nfe
        self.cond, self.rows = cond, rows
        self.seen: dict[tuple[int, ...], float] = {}
        self.on_scored: Callable[[int], None] = lambda count: None

    def __call__(self, candidates: list[tuple[int, ...]]) -> None:
        """Score the candidates not seen yet (interior indices, each a sorted tuple of K - 1)."""
        fresh = list(dict.fromkeys(c for c in candidates if c not in self.seen))
        if not fresh:
            return
        n, s = self.grid.size - 1, self.noise.shape[0]
        paths = np.array([(0, *c, n) for c in fresh], dtype=np.int64).reshape(len(fresh), self.nfe + 1)
        times = self.grid[paths]  # (P, K + 1)
        count = len(fresh)
        dtype, device = self.noise.dtype, self.noise.device
        shape = tuple(self.noise.shape[1:])
        x = self.noise.repeat(count, *([1] * len(shape)))  # row r = (candidate r // S, sample r % S)
        with torch.no_grad():
            for k in range(self.nfe):
                t_rows = torch.tensor(np.repeat(times[:, k], s), dtype=dtype, device=device)
                h_rows = torch.tensor(np.repeat(times[:, k + 1] - times[:, k], s), dtype=dtype, device=device)
                v = torch.empty_like(x)
                for start in range(0, x.shape[0], self.rows):
                    stop = min(start + self.rows, x.shape[0])
                    part = select_cond(self.cond, torch.arange(start, stop) % s, s) if self.cond else {}
                    v[start:stop] = self.model(x[start:stop], t_rows[start:stop], **part)
                # Euler step.
                x = x + h_rows.reshape(-1, *([1] * len(shape))) * v
        diff = x.to(torch.float64).reshape(count, s, -1) - self.target.to(torch.float64).reshape(1, s, -1)
        err = diff.pow(2).mean(dim=(1, 2)).cpu().numpy()
        for c, e in zip(fresh, err):
            self.seen[c] = float(e) if np.isfinite(e) else math.inf
        self.on_scored(count)

    def ranked(self) -> list[tuple[int, ...]]:
        """Every visited candidate, best first (ties broken by the candidate itself, so deterministic)."""
        return sorted(self.seen, key=lambda c: (self.seen[c], c))


def _random_candidate(rng: np.random.Generator, n: int, nfe: int) -> tuple[int, ...]:
    return tuple(int(i) for i in np.sort(rng.choice(np.arange(1, n), size=nfe - 1, replace=False)))


def _mutate(rng: np.random.Generator, parent: tuple[int, ...], n: int, prob: float) -> tuple[int, ...]:
    """Move each interior index with probability ``prob`` (at least one): to a random unused index or a few steps."""
    genes = list(parent)
    moves = rng.random(len(genes)) < prob
    if not moves.any():
        moves[rng.integers(len(genes))] = True
    for pos in np.flatnonzero(moves):
        used = set(genes)
        if rng.random() < 0.5:
            free = [i for i in range(1, n) if i not in used]
            if free:
                genes[pos] = int(free[rng.integers(len(free))])
        else:
            reach = max(1, n // 20)
            step = int(rng.integers(1, reach + 1)) * (1 if rng.random() < 0.5 else -1)
            new = genes[pos] + step
            if 1 <= new < n and new not in used:
                genes[pos] = new
    return tuple(sorted(genes))


def _crossover(rng: np.random.Generator, a: tuple[int, ...], b: tuple[int, ...], n: int) -> tuple[int, ...]:
    """Uniform crossover position by position; duplicates are replaced by random unused indices."""
    pick = rng.random(len(a)) < 0.5
    genes = sorted(set(int(x) for x in np.where(pick, a, b)))
    while len(genes) < len(a):
        free = [i for i in range(1, n) if i not in genes]
        genes = sorted(genes + [int(free[rng.integers(len(free))])])
    return tuple(genes)


def _fresh(
    evaluate: _Evaluator, make: Callable[[], tuple[int, ...]], count: int, taken: set
) -> list[tuple[int, ...]]:
    """Up to ``count`` candidates from ``make`` neither scored yet nor in ``taken`` (which they join)."""
    out: list[tuple[int, ...]] = []
    tries = 0
    while len(out) < count and tries < 10 * count:  # AutoDiffusion's retry bound
        tries += 1
        c = make()
        if c not in evaluate.seen and c not in taken:
            taken.add(c)
            out.append(c)
    return out


def _initial_population(
    evaluate: _Evaluator, n: int, nfe: int, rng: np.random.Generator, population: int, mutation_prob: float,
    seeds: list[tuple[int, ...]],
) -> list[tuple[int, ...]]:
    """The first generation: the family ``seeds``, mutations of the uniform one (``seeds[0]``), random candidates.

    Returns:
        At most ``population`` candidates, each ``nfe - 1`` sorted interior indices of the grid ``0 .. n``.
    """
    first = list(dict.fromkeys(seeds))[:population]
    taken: set = set(first)
    first += _fresh(evaluate, lambda: _mutate(rng, seeds[0], n, mutation_prob), (population - len(first)) // 2, taken)
    first += _fresh(evaluate, lambda: _random_candidate(rng, n, nfe), population - len(first), taken)
    return first


def _next_generation(
    evaluate: _Evaluator, n: int, nfe: int, rng: np.random.Generator, population: int, parents: int,
    mutation_prob: float,
) -> list[tuple[int, ...]]:
    """One generation from the best ``parents`` scored so far: mutations, crossovers, then random candidates.

    Half the ``population`` are mutations and a quarter crossovers of random parents; random
    candidates fill the rest (fewer in all when a retry finds nothing new).
    """
    top = evaluate.ranked()[:parents]
    taken: set = set()

    def parent() -> tuple[int, ...]:
        return top[rng.integers(len(top))]

    new = _fresh(evaluate, lambda: _mutate(rng, parent(), n, mutation_prob), population // 2, taken)
    new += _fresh(evaluate, lambda: _crossover(rng, parent(), parent(), n), population // 4, taken)
    new += _fresh(evaluate, lambda: _random_candidate(rng, n, nfe), population - len(new), taken)
    return new


def evolve_path(
    evaluate: _Evaluator,
    n: int,
    nfe: int,
    rng: np.random.Generator,
    *,
    population: int,
    generations: int,
    parents: int,
    mutation_prob: float,
    seeds: list[tuple[int, ...]],
) -> tuple[tuple[int, ...], bool]:
    """Run the evolutionary search (or enumerate a small space); return ``(best interior indices, exhaustive)``."""
    if nfe == 1:
        evaluate([()])
        return (), True
    space = math.comb(n - 1, nfe - 1)
    if space <= population * (generations + 1):
        for chunk in _batched(itertools.combinations(range(1, n), nfe - 1), population):
            evaluate(list(chunk))
        return evaluate.ranked()[0], True

    evaluate(_initial_population(evaluate, n, nfe, rng, population, mutation_prob, seeds))
    for _ in range(generations):
        evaluate(_next_generation(evaluate, n, nfe, rng, population, parents, mutation_prob))
    return evaluate.ranked()[0], False


def _batched(iterable: Any, size: int) -> Any:
    """Tuples of ``size`` items of ``iterable`` (the last one shorter), as ``itertools.batched`` in Python 3.12."""
    it = iter(iterable)
    while True:
        chunk = tuple(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _check_grid_and_budgets(noise: Any, grid: Any, nfes: Any) -> tuple[np.ndarray, list[int]]:
    """The checked ``(N + 1,)`` base grid and the sorted distinct budgets of ``nfes``, after checking the noise."""
    grid = validate_times(grid, "base grid")
    validate_noise(noise)
    if not isinstance(nfes, (list, tuple)) or not nfes:
        raise BossflowError("give at least one step budget (NFE) as a list, e.g. [2, 4].")
    return grid, sorted({check_budget(k, grid.size - 1) for k in nfes})


@dataclass(frozen=True)
class _Options:
    """The checked search options of :func:`evolution_schedules` (``families`` with ``uniform`` first)."""

    seed: int
    population: int
    generations: int
    parents: int
    mutation_prob: float
    samples: int | None
    substeps: int
    batch_size: int | None
    families: list[str]


def _check_options(
    seed: Any, population: Any, generations: Any, parents: Any, mutation_prob: Any, samples: Any, substeps: Any,
    batch_size: Any, families: Any,
) -> _Options:
    """Check the options of :func:`evolution_schedules` and fill in the default ``parents``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BossflowError(f"the seed must be a non-negative integer, got {seed!r}.")
    population = _positive_int(population, "population", 4)
    generations = _positive_int(generations, "generations", 0)
    parents = max(2, population // 4) if parents is None else _positive_int(parents, "parents", 2)
    if parents > population:
        raise BossflowError(f"parents ({parents}) cannot exceed the population ({population}).")
    if isinstance(mutation_prob, bool) or not isinstance(mutation_prob, (int, float)) or not 0 < mutation_prob <= 1:
        raise BossflowError(f"mutation_prob must be a number in (0, 1], got {mutation_prob!r}.")
    if samples is not None:
        samples = _positive_int(samples, "samples")
    substeps = _positive_int(substeps, "substeps")
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
    if isinstance(families, str) or any(f not in FAMILIES for f in families):
        raise BossflowError(f"families must be a list of names from {', '.join(FAMILIES)}, got {families!r}.")
    return _Options(
        seed=int(seed), population=population, generations=generations, parents=parents,
        mutation_prob=float(mutation_prob), samples=samples, substeps=substeps, batch_size=batch_size,
        families=["uniform", *[f for f in families if f != "uniform"]],
    )


@dataclass(frozen=True)
class _Teacher:
    """The search noises and the teacher's endpoint from them, shared by every budget.

    Attributes:
        model: the model, counting the rows and calls of each budget's search.
        noise: ``(S, *shape)`` search noises at ``t = 0``.
        cond: the conditioning of those S noises.
        target: ``(S, *shape)`` the teacher's state at ``t = 1``.
        counts: ``teacher_rows`` and ``teacher_calls``, the teacher's cost.
    """

    model: NFECounter
    noise: Tensor
    cond: dict
    target: Tensor
    counts: dict


def _teacher_endpoint(
    model: Callable[..., Tensor], noise: Tensor, grid: np.ndarray, cond: dict | None, opts: _Options
) -> _Teacher:
    """The first ``opts.samples`` of the noises ``(B, *shape)`` and their fine Euler trajectory's endpoint."""
    n_total = int(noise.shape[0])
    n_used = n_total if opts.samples is None else min(opts.samples, n_total)
    search_noise = noise[:n_used]
    cond = dict(cond or {})
    if cond:
        cond = select_cond(cond, torch.arange(n_used), n_total)
    counted = NFECounter(model)
    rows = n_used if opts.batch_size is None else opts.batch_size
    target = batched_trajectory(counted, search_noise, grid, batch_size=rows, substeps=opts.substeps, cond=cond).xs[-1]
    counts = {"teacher_rows": counted.samples, "teacher_calls": counted.nfe}
    return _Teacher(model=counted, noise=search_noise, cond=cond, target=target, counts=counts)


def _evolve_budget(
    teacher: _Teacher, grid: np.ndarray, nfe: int, opts: _Options, bar: Any, planned: int
) -> tuple[np.ndarray, dict]:
    """Seed, evolve and pick the best ``nfe``-step path on the grid; ``bar`` advances by ``planned`` candidates.

    Returns:
        ``(indices, found)``: the ``(nfe + 1,)`` int64 grid indices of the best candidate and the
        schedule's search metadata (cost, the uniform seed's cost, row and call counts, ...).
    """
    counted, n_used, n = teacher.model, teacher.noise.shape[0], grid.size - 1
    counted.reset()
    rows = opts.batch_size if opts.batch_size is not None else max(1, opts.population) * n_used
    evaluate = _Evaluator(counted, teacher.noise, teacher.target, grid, nfe, teacher.cond, rows)
    evaluate.on_scored = bar.update
    bar.set_postfix_str(f"NFE {nfe}", refresh=False)
    rng = np.random.default_rng(np.random.SeedSequence(opts.seed, spawn_key=(nfe,)))
    seeds = _family_candidates(grid, nfe, opts.families)
    evaluate([seeds[0]])
    uniform_cost = evaluate.seen[seeds[0]]
    best, exhaustive = evolve_path(
        evaluate, n, nfe, rng, population=opts.population, generations=opts.generations, parents=opts.parents,
        mutation_prob=opts.mutation_prob, seeds=seeds,
    )
    bar.update(max(0, planned - len(evaluate.seen)))  # keep the bar's total honest
    idx = np.array([0, *best, n], dtype=np.int64)
    found = {
        "method": "evolution",
        "indices": idx.tolist(),
        "cost": evaluate.seen[best],
        "uniform_cost": uniform_cost,
        "samples": n_used,
        "seed": opts.seed,
        "substeps": opts.substeps,
        "population": opts.population,
        "generations": opts.generations,
        "exhaustive": exhaustive,
        "evaluations": len(evaluate.seen),
        **teacher.counts,
        "search_rows": counted.samples,
        "search_calls": counted.nfe,
    }
    return idx, found


def evolution_schedules(
    model: Callable[..., Tensor], noise: Tensor, grid: Any, nfes: list[int], *,
    cond: dict | None = None, provenance: dict | None = None,
    seed: int = 0,
    population: int = 32,
    generations: int = 40,
    parents: int | None = None,
    mutation_prob: float = 0.3,
    samples: int | None = 64,
    substeps: int = 1,
    batch_size: int | None = None,
    families: Sequence[str] = FAMILIES,
    progress: bool = False,
) -> dict[int, Schedule]:
    """AutoDiffusion-style evolutionary search (Li et al., ICCV 2023) of Euler step times on a base grid.

    See the module docstring for the algorithm, what is simplified and the cost in model rows.

    Args:
        model, noise, grid, nfes, cond, provenance: as for every search (:mod:`bossflow.search`); only the
            first ``samples`` noises are used, and candidates are subsets of ``grid``.
        seed: seed of the search's own ``numpy.random.Generator`` (its only randomness).
        population: candidates per generation (at least 4).
        generations: generations after the initial population (0 keeps the initial population's best).
        parents: best candidates kept as parents, ``2 <= parents <= population``
            (default ``max(2, population // 4)``, 8 for the default population).
        mutation_prob: probability that a mutation moves each index, in ``(0, 1]``.
        samples: at most this many search noises (``None``: all of them).
        substeps: Euler sub-steps per grid interval for the teacher trajectory.
        batch_size: rows per model call (default: a whole generation at once).
        families: baseline families seeded into the initial population, from ``uniform``,
            ``edm``, ``shift``; ``uniform`` is always included (first).
        progress: show a tqdm bar over the candidates scored (every budget's).

    Returns:
        ``{nfe: Schedule}`` with ``method="evolution"``, the grid ``indices``, ``cost`` (endpoint
        MSE per dimension on the search noises), ``uniform_cost`` (the snapped uniform seed's),
        ``samples``, ``seed``, ``exhaustive``, ``evaluations`` and the row/call counts.

    Raises:
        BossflowError: a bad noise tensor, budget or option.

    Example:
        >>> import torch, bossflow as bf
        >>> noise = bf.gaussian_noise(16, (2,), dtype=torch.float64)
        >>> found = evolution_schedules(bf.models.gmm_2d(), noise, bf.uniform_schedule(20).times, [3],
        ...                             population=8, generations=3)
        >>> found[3].nfe, found[3].meta["method"], found[3].meta["cost"] <= found[3].meta["uniform_cost"]
        (3, 'evolution', True)
    """
    grid, budgets = _check_grid_and_budgets(noise, grid, nfes)
    opts = _check_options(
        seed, population, generations, parents, mutation_prob, samples, substeps, batch_size, families
    )
    teacher = _teacher_endpoint(model, noise, grid, cond, opts)

    from tqdm.auto import tqdm

    # At most this many candidates per budget (fewer when a retry finds nothing new).
    n, cap = grid.size - 1, opts.population * (opts.generations + 1)
    planned = {k: 1 if k == 1 else min(math.comb(n - 1, k - 1), cap) for k in budgets}
    bar = tqdm(total=sum(planned.values()), desc="evolution", unit="candidate", disable=not progress)
    out: dict[int, Schedule] = {}
    for k in budgets:
        idx, found = _evolve_budget(teacher, grid, k, opts, bar, planned[k])
        out[k] = Schedule(grid[idx], **{**(provenance or {}), **found})
    bar.close()
    return out


__all__ = ["evolution_schedules", "snap_to_grid"]
