"""The availability funnel: how many selected YTIDs survive each stage, and why the others
did not (a picture for the HTML report)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import atomic_path

__all__ = ["plot_funnel"]


def _fit(line: str, width: int) -> str:
    """Shorten a reason line (``stage: status: reason xN``) to ``width`` characters, keeping
    its count."""
    if len(line) <= width:
        return line
    head, sep, count = line.rpartition(" x")
    if not sep or not count.isdigit():
        return line[: width - 1] + "…"
    return head[: width - len(count) - 3] + "…" + sep + count


def plot_funnel(
    availability: pd.DataFrame, path: str | Path, *, sources: pd.DataFrame | None = None
) -> None:
    """Plot ``availability.tsv`` (see :func:`audiosetflow.reporting.aggregate.availability`)
    as one bar chart per split: clips done after each stage, failures stacked on top, the commonest
    failure reasons written under the chart (shortened to fit under their panel). With
    ``sources`` (``sources.tsv``, :func:`audiosetflow.reporting.aggregate.by_source`) the
    download bar is split by where the clips came from. Saved atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(dict.fromkeys(availability["split"]))
    width = 96  # characters of a reason line that fit under one panel
    fig, axes = plt.subplots(
        1, max(1, len(splits)), figsize=(6.5 * max(1, len(splits)), 5.2), squeeze=False
    )
    for ax, split in zip(axes[0], splits, strict=False):
        part = availability[availability["split"] == split]
        x = range(len(part))
        ax.bar(x, part["done"], color="#3b7dd8", label="done")
        src = None if sources is None else sources[sources["split"] == split]
        stages = list(part["stage"])
        if src is not None and "download" in stages and (src["source"] != "none").any():
            got = src[src["source"] != "none"]
            i = stages.index("download")
            bottom = 0
            colours = ["#1d4f91", "#5fa8e8", "#8fc1f0", "#2b6cb0", "#a3c9f5"]
            for k, (name, n) in enumerate(zip(got["source"], got["clips"], strict=True)):
                ax.bar(i, n, bottom=bottom, color=colours[k % len(colours)], width=0.8,
                       edgecolor="white", label=f"download: {_fit(str(name), 28)}")  # fmt: skip
                bottom += int(n)
        ax.bar(x, part["failed"], bottom=part["done"], color="#e4572e", label="failed")
        for i, (d, f) in enumerate(zip(part["done"], part["failed"], strict=True)):
            ax.text(i, d / 2, str(d), ha="center", va="center", color="white", fontsize=9)
            if f:
                ax.text(i, d + f / 2, str(f), ha="center", va="center", color="white", fontsize=9)
        ax.set_xticks(list(x), part["stage"])
        ax.set_ylabel("YTIDs")
        ax.set_title(f"{split}: availability funnel")
        ax.set_ylim(0, max(1, int(part["entered"].max())) * 1.18)
        ax.legend(loc="upper right", ncols=2)
        reasons = []
        for stage, text in zip(part["stage"], part["reasons"].fillna(""), strict=True):
            for item in [t for t in str(text).split("; ") if t][:3]:
                reasons.append(_fit(f"{stage}: {item}", width))
        if reasons:
            ax.text(
                0.0, -0.14, "\n".join(reasons[:8]), transform=ax.transAxes, va="top", fontsize=7,
                family="monospace",
            )  # fmt: skip
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
