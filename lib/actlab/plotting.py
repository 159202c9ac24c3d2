"""One seaborn theme for every figure, readable in the book and on a projector."""

from __future__ import annotations

from pathlib import Path

import matplotlib

PALETTE = "colorblind"
#: Colour of the paper's reference values (lines and markers) in every figure.
PAPER_COLOR = "#7f7f7f"


def set_theme(context: str = "notebook") -> None:
    """seaborn's whitegrid style, colour-blind palette, larger fonts and a crisp inline resolution."""
    import seaborn as sns

    sns.set_theme(context=context, style="whitegrid", palette=PALETTE, font_scale=1.05)
    matplotlib.rcParams.update({
        "figure.figsize": (7.0, 4.0), "figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
        "axes.titlesize": "medium", "axes.titleweight": "bold", "axes.spines.right": False,
        "axes.spines.top": False, "legend.frameon": False,
        # Stable SVG/PNG bytes from run to run.
        "svg.hashsalt": "actlab", "path.simplify": True,
    })


def paper_line(ax, value: float, label: str = "paper", horizontal: bool = True) -> None:  # noqa: ANN001
    """Draw the paper's figure as a dashed reference line on ``ax``."""
    draw = ax.axhline if horizontal else ax.axvline
    draw(value, color=PAPER_COLOR, linestyle="--", linewidth=1.2, label=label)


def save(fig, name: str, directory: str | Path = "figures") -> Path:  # noqa: ANN001
    """Save a figure as PNG under ``directory`` (created if needed) and return its path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, metadata={"Software": None})
    return path
