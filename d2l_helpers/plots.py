"""Figures for the notebooks: the only module that imports matplotlib.

* `show_images`: the book's grid of photos (``d2l.show_images``, for HWC uint8 arrays);
* `LivePlot`: a `training.train_ch13` callback that redraws the book's live curves
  (train loss, train acc, test acc) in a notebook, or does nothing elsewhere;
* `plot_histories`: several runs' curves on shared axes (fine-tune vs scratch);
* `plot_confusion`: a confusion matrix with counts;
* `show_heatmaps`: Grad-CAM maps over their photos; `plot_lr_find`: the learning-rate finder.

Example:
    >>> from d2l_helpers.plots import LivePlot
    >>> history = train_fine_tuning(net, 7.8125e-5, callback=LivePlot())   # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as onp


def _to_numpy(img):
    if hasattr(img, "asnumpy"):
        img = img.asnumpy()
    return onp.asarray(img)


def show_images(imgs: Sequence, num_rows: int, num_cols: int,
                titles: Sequence[str] | None = None, scale: float = 1.5):
    """Plot a grid of images (HWC uint8 or float in [0, 1]); returns the axes."""
    fig, axes = plt.subplots(num_rows, num_cols,
                             figsize=(num_cols * scale, num_rows * scale), squeeze=False)
    axes = axes.ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < len(imgs):
            ax.imshow(_to_numpy(imgs[i]))
            if titles is not None and i < len(titles):
                ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return axes


def denormalize(tensor, mean: Sequence[float], std: Sequence[float]) -> onp.ndarray:
    """Undo ``ToTensor`` + ``Normalize``: CHW float -> HWC float in [0, 1] for display."""
    x = _to_numpy(tensor).transpose(1, 2, 0)
    return onp.clip(x * onp.asarray(std) + onp.asarray(mean), 0, 1)


class LivePlot:
    """A `training.train_ch13` callback drawing the book's animated curves.

    In a notebook it redraws one figure in place after each logging point (about five
    times an epoch). Outside IPython it draws nothing; the returned History has the numbers.
    ``draw()`` before training shows the empty figure in the current cell, and training in a
    later cell then redraws it there (the notebooks do this so that the curves stay on the
    slides while the training cell is skipped). `runs.train_or_replay` replays saved curves
    through the same callback, once per epoch.
    """

    def __init__(self, title: str | None = None, figsize=(4.5, 3)):
        self.title, self.figsize = title, figsize
        self.points: dict[str, list[tuple[float, float]]] = {
            "train loss": [], "train acc": [], "test acc": []}
        self._handle = None
        try:
            from IPython import get_ipython

            self.enabled = get_ipython() is not None
        except ImportError:
            self.enabled = False

    def __call__(self, event: str, history, epoch: float, train_loss: float,
                 train_acc: float, test_acc: float | None = None) -> None:
        if event == "batch":
            self.points["train loss"].append((epoch, train_loss))
            self.points["train acc"].append((epoch, train_acc))
        elif event == "epoch":
            self.points["test acc"].append((epoch, test_acc))
        if self.enabled:
            self.draw(history.config.get("num_epochs"))

    def figure(self, num_epochs: int | None = None):
        fig, ax = plt.subplots(figsize=self.figsize)
        for (label, pts), style in zip(self.points.items(), ("-", "m--", "g-.")):
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, label=label, marker="o" if label == "test acc" else None)
        ax.set_xlabel("epoch")
        if num_epochs:
            ax.set_xlim(0, num_epochs)
        ax.grid(True, alpha=0.3)
        if any(self.points.values()):   # an empty figure (drawn before training) has no legend
            ax.legend(loc="best", fontsize=8)
        if self.title:
            ax.set_title(self.title)
        return fig

    def draw(self, num_epochs: int | None = None) -> None:
        from IPython import display

        fig = self.figure(num_epochs)
        if self._handle is None:
            self._handle = display.display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)


def plot_histories(histories: dict, metric: str = "test_acc", ax=None):
    """One line per run (``{label: History}``) of ``metric`` against the epoch, from
    epoch 0 (before training) where the run recorded it."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3))
    for label, h in histories.items():
        # epoch 0 has a test accuracy but no training loss or accuracy (None: not drawn)
        ys = [float("nan") if v is None else v for v in getattr(h, metric)]
        ax.plot(h.epoch, ys, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_spread(groups: dict, references: dict | None = None, ax=None,
                xlabel: str = "final test accuracy"):
    """One row per group (``{label: [value per seed]}``): each seed a dot, the mean a bar;
    ``references`` (``{label: value}``, e.g. the zero-shot rule) as dashed vertical lines.

    `study.StudyResult.finals` gives the values per seed of one arm.
    """
    import numpy as onp

    labels = list(groups)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.45 * len(labels) + 1.0))
    for i, label in enumerate(labels):
        vals = onp.asarray(list(groups[label]), dtype=float)
        ax.plot(vals, onp.full(len(vals), i), "o", alpha=0.6, color="C0")
        ax.plot([vals.mean()] * 2, [i - 0.3, i + 0.3], "-", color="C3", lw=2)
    for k, (name, value) in enumerate((references or {}).items()):
        ax.axvline(value, ls="--", color=f"C{k + 4}", lw=1, label=name)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    if references:
        ax.legend(fontsize=8, loc="lower left")
    return ax


def plot_variants(histories, ax=None):
    """Final test accuracy against the share of trainable parameters, one point per run.

    ``histories``: Histories from `variants` (config has ``method``, ``trainable_params``,
    ``total_params``). Draws the rows of `variants.summarize`: each method's mean as a
    large marker with a bar from the lowest to the highest seed, and its seeds as small
    dots; the x axis (``% of all``) is logarithmic.
    """
    from .variants import final_accuracies, group_runs, summarize

    histories = list(histories)
    groups, rows = group_runs(histories), summarize(histories)
    several_backbones = len({row["backbone"] for row in rows}) > 1
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    for row in rows:
        share, mean = row["% of all"], row["test acc mean"]
        label = f"{row['backbone']}, " if several_backbones else ""
        line = ax.errorbar([share], [mean],
                           yerr=[[mean - row["acc min"]], [row["acc max"] - mean]],
                           fmt="o", markersize=8, capsize=4,
                           label=f"{label}{row['method']} (n={row['seeds']})")
        accs = final_accuracies(groups[row["backbone"], row["method"]])
        ax.plot([share] * len(accs), accs, ".", color=line[0].get_color(), alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (% of all, log scale)")
    ax.set_ylabel("final test accuracy")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return ax


def plot_confusion(matrix, class_names: Sequence[str], ax=None):
    """A confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    m = onp.asarray(matrix)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, int(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    return ax


def show_heatmaps(images: Sequence, maps: Sequence, titles: Sequence[str] | None = None,
                  num_cols: int = 4, scale: float = 1.7, alpha: float = 0.45):
    """Photos with a heat map (values in [0, 1], e.g. `gradcam.GradCAM.maps`) laid over
    them, in a grid; each map is stretched over its photo. Returns the axes."""
    n = len(images)
    rows = -(-n // num_cols)
    fig, axes = plt.subplots(rows, num_cols, figsize=(num_cols * scale, rows * scale),
                             squeeze=False)
    axes = axes.ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        img = _to_numpy(images[i])
        h, w = img.shape[:2]
        ax.imshow(img)
        ax.imshow(onp.asarray(maps[i]), cmap="jet", alpha=alpha, vmin=0, vmax=1,
                  extent=(0, w, h, 0), interpolation="bilinear")
        if titles is not None and i < len(titles):
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return axes


def plot_lr_find(result, ax=None):
    """A `lr_finder.LRFinderResult`: loss (raw and smoothed) against the learning rate on a
    log axis, the suggested rate and the book's rate marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss per step")
    ax.plot(result.lrs, result.smoothed, lw=2, label="smoothed")
    ax.axvline(result.suggested_lr, color="C2", ls="--", lw=1.5,
               label=f"suggested {result.suggested_lr:.1e}")
    ax.axvline(result.book_lr, color="C3", ls=":", lw=1.5, label=f"the book's {result.book_lr:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (per example)")
    ax.set_ylabel("training loss")
    top = max(result.smoothed[: max(1, len(result.smoothed))])
    ax.set_ylim(min(result.smoothed) * 0.9, min(top, 3 * min(result.smoothed)) * 1.1)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


def use_png(dpi: int = 80) -> None:
    """Inline figures as PNG at a modest dpi, so executed notebooks stay small in git."""
    import matplotlib

    matplotlib.rcParams["figure.dpi"] = dpi
    matplotlib.rcParams["savefig.dpi"] = dpi
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # outside Jupyter
        pass
