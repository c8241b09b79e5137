"""The demo's figures, drawn with matplotlib (Agg backend, imported only here, only when called).

Every function takes plain data (report rows, arrays, tensors), writes one PNG atomically
and returns its path. Each method keeps one colour and marker across all figures.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..core._io import write_atomic
from ..core.errors import BossflowError

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
_PATH_COLORS = ["#1f5fd6", "#e0301e", "#1a9e3a", "#ff9900", "#9b30d9", "#00a6b8"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise BossflowError("the figures need matplotlib; install it with `pip install matplotlib`.") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


_FIXED_STYLES = {
    # every registered search and the demo's extra rows: no two share a colour, none shares both colour and marker
    "uniform": ("#1f77b4", "o"),
    "edm": ("#ff7f0e", "s"),
    "shift": ("#2ca02c", "^"),
    "bellman": ("#d62728", "D"),
    "global-dp": ("#9467bd", "v"),
    "gits": ("#8c564b", "P"),
    "ays": ("#e377c2", "X"),
    "evolution": ("#7f7f7f", "*"),
    "olss": ("#bcbd22", "<"),
    "refined": ("#17becf", ">"),
    "auto": ("#e6007e", "h"),
    "BOSS-straightened": ("#b8860b", "p"),
}
"""Colour and marker of the registered searches (``auto``: raspberry hexagons) and the demo's straightened student."""


def method_style(method: str) -> dict[str, Any]:
    """Colour and marker of a method: fixed for the registered searches (:data:`_FIXED_STYLES`), stable for any
    other name."""
    if method in _FIXED_STYLES:
        color, marker = _FIXED_STYLES[method]
    else:
        i = sum(map(ord, method))
        color, marker = _PALETTE[i % len(_PALETTE)], _MARKERS[(i // len(_PALETTE)) % len(_MARKERS)]
    return {"color": color, "marker": marker}


def _save(fig: Any, path: str | os.PathLike, dpi: int) -> Path:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return write_atomic(path, lambda f: f.write(buf.getvalue()))


def _methods(rows: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows))


def plot_schedules(rows: Sequence[Mapping], model: str, nfes: Sequence[int], path: str | os.PathLike, *,
                   dpi: int = 110) -> Path:
    """Step times ``t_k`` against the step index ``k``, one line per method, one panel per NFE.

    Args:
        rows: report rows (``model``, ``method``, ``nfe``, ``times``, optional ``eval_times``).
        model: which model's schedules to draw.
        nfes: budgets, one panel each.
        path: PNG to write.
        dpi: resolution.
    """
    plt = _pyplot()
    mine = [r for r in rows if r["model"] == model]
    nfes = [k for k in nfes if any(r["nfe"] == k for r in mine)]
    if not nfes:
        raise BossflowError(f"no schedules of model {model!r} at the requested budgets.")
    ncols = 2 if len(nfes) == 4 else min(len(nfes), 3)
    nrows = -(-len(nfes) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 2.2, 3.9 * nrows), squeeze=False)
    for ax in axes.flat[len(nfes):]:
        ax.set_axis_off()
    for ax, k in zip(axes.flat, nfes):
        for r in (r for r in mine if r["nfe"] == k):
            style = method_style(r["method"])
            ax.plot(range(k + 1), r["times"], label=r["method"], color=style["color"], marker=style["marker"],
                    markersize=4, linewidth=1.3, alpha=0.9)
            if r.get("eval_times") is not None and not np.allclose(r["eval_times"], r["times"][:-1]):
                ax.plot(range(k), r["eval_times"], linestyle="none", marker=style["marker"], markersize=7,
                        markerfacecolor="none", color=style["color"], label=f"{r['method']}: evaluation times $s_k$")
        ax.set_title(f"NFE {k}")
        ax.set_xlabel("step k")
        ax.set_ylabel("time $t_k$ (0 = noise, 1 = data)")
        ax.set_xticks(range(k + 1))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), title="method")
    fig.suptitle(f"{model}: schedules found by each method (step times per step)")
    fig.tight_layout()
    return _save(fig, path, dpi)


def _log_axis(ax: Any) -> None:
    """Log y axis with plain-number tick labels, and labelled minor ticks when the range is under two decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    fmt = FuncFormatter(lambda v, _: f"{v:g}" if 1e-3 <= v < 1e5 else f"{v:.0e}")
    ax.yaxis.set_major_formatter(fmt)
    if hi / lo < 10:
        subs: tuple[float, ...] | None = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    elif hi / lo < 100:
        subs = (1.0, 2.0, 5.0)
    else:
        subs = None
    if subs:
        ax.yaxis.set_minor_locator(LogLocator(subs=subs))
        ax.yaxis.set_minor_formatter(fmt)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def plot_error_vs_nfe(rows: Sequence[Mapping], panels: Sequence[Sequence[tuple[str, str]]],
                      floors: Mapping[str, Mapping] | None, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Error against NFE, log scale: one column per model, one row of panels per entry of ``panels``.

    Args:
        rows: report rows.
        panels: per figure row, candidate ``(key, label)`` metrics; each model's panel shows the
            first candidate its rows have (e.g. the digits Fréchet distance, else W2).
        floors: per model, the reference solver's value of each metric (drawn as a dashed line).
        path: PNG to write.
        dpi: resolution.
    """
    plt = _pyplot()
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(len(panels), len(models), figsize=(4.6 * len(models) + 1.8, 3.7 * len(panels)), squeeze=False)
    for col, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        for row, candidates in enumerate(panels):
            ax = axes[row][col]
            found = [(k, lab) for k, lab in candidates if any(r.get(k) is not None for r in mine)]
            if not found:
                ax.set_axis_off()
                continue
            key, label = found[0]
            keyed = [r for r in mine if r.get(key) is not None]
            for method in _methods(keyed):
                pts = sorted((r["nfe"], r[key]) for r in keyed if r["method"] == method)
                style = method_style(method)
                ax.plot([p[0] for p in pts], [max(p[1], 1e-12) for p in pts], label=method, color=style["color"],
                        marker=style["marker"], markersize=4, linewidth=1.3)
            floor = (floors or {}).get(model, {}).get(key)
            if floor:
                ax.axhline(floor, color="black", linestyle="--", linewidth=1, label="reference solver (floor)")
            _log_axis(ax)
            ax.set_title(f"{model}: {label}")
            ax.set_xlabel("NFE (model evaluations)")
            ax.set_ylabel(label)
            ax.set_xticks(sorted({r["nfe"] for r in keyed}))
            ax.grid(alpha=0.3, which="both")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), title="method")
    fig.suptitle("Error against NFE for each method (log scale; lower is better)")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_cost_matrices(costs: Mapping[str, tuple[np.ndarray, Mapping[int, Sequence[int]]]], path: str | os.PathLike, *,
                       dpi: int = 110) -> Path:
    """BOSS cost matrices as heat maps (log colour scale) with the chosen Bellman paths drawn on them.

    A path ``0 = i_0 < i_1 < ... < i_K = N`` visits the cells ``(i_k, i_{k+1})`` (row: step start,
    column: step end); consecutive cells are joined by a staircase.

    Args:
        costs: per model, ``(C, {nfe: grid indices of the path})`` with ``C`` the ``(N + 1, N + 1)`` matrix.
        path: PNG to write.
        dpi: resolution.
    """
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, len(costs), figsize=(5.4 * len(costs) + 1.6, 5.0), squeeze=False)
    for ax, (model, (cost, paths)) in zip(axes[0], costs.items()):
        c = np.array(cost, dtype=np.float64)
        finite = np.isfinite(c)
        # the colour range leaves out the first super-diagonal, which is ~0 when the trajectory is the grid's own
        off = finite & (np.arange(c.shape[0])[None, :] > np.arange(c.shape[0])[:, None] + 1) & (c > 0)
        if not off.any():
            raise BossflowError(f"the cost matrix of {model!r} has no positive finite entry to draw.")
        hi = float(c[off].max())
        lo = max(float(np.percentile(c[off], 1)), hi * 1e-9)
        cmap = plt.get_cmap("Greys").with_extremes(under="white", bad="#f3ecd9")
        shown = np.where(finite, np.maximum(c, lo * 1e-3), np.nan)
        im = ax.imshow(shown, origin="upper", cmap=cmap, norm=LogNorm(vmin=lo, vmax=hi), interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="one-step cost C[i, j] (per dimension)")
        for n_path, (k, idx) in enumerate(sorted(paths.items())):
            # staircase through the cells (i_k, i_{k+1}): along row i_k to column i_{k+1}, then down to row i_{k+1}
            sx, sy = [], []
            for a, b in zip(list(idx)[:-1], list(idx)[1:]):
                if sx:
                    sx.append(sx[-1])
                    sy.append(a)
                sx.append(b)
                sy.append(a)
            color = _PATH_COLORS[n_path % len(_PATH_COLORS)]
            ax.plot(sx, sy, color=color, linewidth=1.6, marker="o", markersize=3.5, label=f"K = {k}")
        n = c.shape[0] - 1
        ax.set_xlim(-0.5, n + 0.5)
        ax.set_ylim(n + 0.5, -0.5)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step end j (grid index)")
        ax.set_ylabel("step start i (grid index)")
        ax.set_title(f"{model}: cost matrix, N = {n}")
        ax.legend(loc="lower left", fontsize=7, title="Bellman path", title_fontsize=7)
    fig.suptitle("BOSS cost matrices (log scale; white: below the scale, e.g. C[i, i+1] = 0 on the grid's own "
                 "trajectory; beige: undefined, j ≤ i) and the chosen K-step Bellman paths")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_scatter(data: Any, samples: Mapping[str, Any], model: str, nfe: int, path: str | os.PathLike, *,
                 reference: Any | None = None, scores: Mapping[str, str] | None = None, max_points: int = 600,
                 dpi: int = 110) -> Path:
    """2-D samples of each method at one NFE, over the exact data (grey).

    Args:
        data: ``(n, 2)`` data samples.
        samples: per method, ``(n, 2)`` samples at ``nfe``.
        model: model name for the title.
        nfe: the budget drawn.
        path: PNG to write.
        reference: ``(n, 2)`` reference-solver samples, drawn as the first panel when given.
        scores: per panel name, a line of numbers for its title (e.g. ``"RMSE 0.12, W2 0.45"``).
        max_points: points drawn per set.
        dpi: resolution.
    """
    plt = _pyplot()
    panels = ([("reference solver", reference)] if reference is not None else []) + list(samples.items())
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.4 * nrows), squeeze=False)
    d = np.asarray(data, dtype=np.float64)[:max_points]
    lim = 1.15 * float(np.abs(d).max())
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, (name, pts) in zip(axes.flat, panels):
        p = np.asarray(pts, dtype=np.float64)[:max_points]
        ax.scatter(d[:, 0], d[:, 1], s=4, color="#bbbbbb", label="exact data", rasterized=True)
        color = "black" if name == "reference solver" else method_style(name)["color"]
        ax.scatter(p[:, 0], p[:, 1], s=4, color=color, label=name, rasterized=True)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(name + (f"\n{scores[name]}" if scores and name in scores else ""), fontsize=9)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.legend(loc="upper right", fontsize=6, markerscale=2, framealpha=0.7)
    fig.suptitle(f"{model}: samples at NFE {nfe} (coloured) over exact data (grey)")
    fig.tight_layout()
    return _save(fig, path, dpi)


def _tile(images: Any, per_row: int) -> np.ndarray:
    """``(n, 1, H, W)`` images in [-1, 1] as one mosaic in [0, 1], ``per_row`` images a row, NaN between images."""
    x = np.clip((np.asarray(images, dtype=np.float64)[:, 0] + 1.0) / 2.0, 0.0, 1.0)
    n, h, w = x.shape
    rows = -(-n // per_row)
    out = np.full((rows * (h + 1) - 1, per_row * (w + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, per_row)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = x[i]
    return out


def plot_digit_grids(grids: Mapping[str, Mapping[int, Any]], teacher: Any, teacher_label: str,
                     path: str | os.PathLike, *, scores: Mapping[str, Mapping[int, str]] | None = None,
                     per_row: int = 4, dpi: int = 110) -> Path:
    """Digits samples: one row per method, one column per NFE, and the teacher's many-step samples beside them.

    Every cell shows the same noises, so cells of one column differ only by the schedule.

    Args:
        grids: per method, ``{nfe: (n, 1, H, W) images in [-1, 1]}``.
        teacher: ``(n, 1, H, W)`` images of the same noises from the many-step teacher.
        teacher_label: column title of the teacher (e.g. ``"teacher, 100 Euler steps"``).
        path: PNG to write.
        scores: per method and NFE, a short text shown under the cell (e.g. ``"FD 27.6"``).
        per_row: digits per mosaic row.
        dpi: resolution.
    """
    plt = _pyplot()
    methods = list(grids)
    nfes = sorted({k for g in grids.values() for k in g})
    ncols = len(nfes) + 1
    fig, axes = plt.subplots(len(methods), ncols, figsize=(2.0 * ncols + 1.2, 2.05 * len(methods) + 0.8), squeeze=False)
    image = None
    cmap = plt.get_cmap("gray_r").with_extremes(bad="#9fb4d6")  # bad: the separators between digits
    teacher_tile = _tile(teacher, per_row)
    for r, method in enumerate(methods):
        for c in range(ncols):
            ax = axes[r][c]
            tile = teacher_tile if c == len(nfes) else (_tile(grids[method][nfes[c]], per_row) if nfes[c] in grids[method] else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if tile is None:
                ax.set_axis_off()
                continue
            image = ax.imshow(tile, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if r == 0:
                ax.set_title(teacher_label if c == len(nfes) else f"NFE {nfes[c]}", fontsize=9)
            if c == 0:
                ax.set_ylabel(method, fontsize=10, color=method_style(method)["color"])
            if c < len(nfes) and scores and nfes[c] in scores.get(method, {}):
                ax.set_xlabel(scores[method][nfes[c]], fontsize=8)
    fig.suptitle("digits: few-step samples per method (rows) and NFE (columns), the teacher at the right;\n"
                 "the same noises in every cell")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label="ink (pixel value mapped to [0, 1])")
    return _save(fig, path, dpi)


def save_image_grid(images: Any, path: str | os.PathLike, per_row: int, *, title: str | None = None,
                    dpi: int = 110) -> Path:
    """``(n, C, H, W)`` images in [-1, 1] (``C`` 1 or 3) as one mosaic, ``per_row`` images a row.

    Pixels are mapped to [0, 1] and clamped; grey images use a plain grey scale (-1 black, 1 white).
    Small mosaics are enlarged by a whole factor, so every pixel stays a sharp square.

    Args:
        images: ``(n, C, H, W)`` array or tensor.
        path: PNG to write.
        per_row: images per mosaic row.
        title: line above the mosaic.
        dpi: resolution.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise BossflowError(f"an image grid needs (n, C, H, W) images with C = 1 or 3, got shape {x.shape}.")
    if not isinstance(per_row, int) or per_row < 1:
        raise BossflowError(f"per_row must be a positive integer, got {per_row!r}.")
    plt = _pyplot()
    per_row = min(per_row, x.shape[0])
    separator = (0.62, 0.71, 0.84)
    if x.shape[1] == 1:
        tile = _tile(x, per_row)
        shown = {"cmap": plt.get_cmap("gray").with_extremes(bad=separator), "vmin": 0, "vmax": 1}
    else:
        tile = np.stack([_tile(x[:, c:c + 1], per_row) for c in range(3)], axis=-1)
        tile[np.isnan(tile[..., 0])] = separator
        shown = {}
    h, w = tile.shape[:2]
    scale = max(1, -(-512 // max(h, w)))  # enlarge small mosaics to about 512 pixels
    fig = plt.figure(figsize=(w * scale / dpi, h * scale / dpi))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(tile, interpolation="nearest", **shown)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path, dpi)


def save_scatter(points: Any, path: str | os.PathLike, title: str, *, dpi: int = 110) -> Path:
    """``(n, 2)`` points as one scatter plot with equal axes.

    Args:
        points: ``(n, 2)`` array or tensor.
        path: PNG to write.
        title: line above the plot.
        dpi: resolution.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise BossflowError(f"a scatter plot needs (n, 2) points, got shape {p.shape}.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 5.0))
    ax.scatter(p[:, 0], p[:, 1], s=4, alpha=0.6, color=_PALETTE[0], linewidths=0, rasterized=True)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, dpi)
