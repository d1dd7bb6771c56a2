"""Matplotlib without a display, and charts saved as SVG and PNG, atomically and reproducibly."""

from __future__ import annotations

from pathlib import Path

from nanogerman.atomic import atomic_path

PLOT_FORMATS = ("svg", "png")


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, with stable SVG ids (the same data give the same file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "nanogerman"
    return plt


def save_figure(figure, folder: Path, name: str) -> list[Path]:
    """Write ``figure`` as ``<folder>/<name>.svg`` and ``.png`` (no date in the SVG); return the paths."""
    written = []
    for fmt in PLOT_FORMATS:
        path = Path(folder) / f"{name}.{fmt}"
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=fmt, dpi=150, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else {})
        written.append(path)
    return written
