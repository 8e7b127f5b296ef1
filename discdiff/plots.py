"""Line plots as PNG files, drawn with Pillow (no matplotlib needed): loss curves, sampler
frontiers. One function, :func:`line_plot`: named series of (x, y) points, linear or log axes,
an optional label beside each point, a legend."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

__all__ = ["line_plot"]

COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (80, 80, 80),
    (219, 219, 141),
    (158, 218, 229),
]  # fmt: skip  (tab20's order: 20 series before a colour repeats)

Series = Sequence[tuple[str, Sequence[tuple[float, float]]]]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + 1e-12 * abs(hi) and len(ticks) < 50:
        ticks.append(value)
        value += step
    return ticks


def line_plot(
    series: Series,
    png_path: str | Path,
    *,
    x_label: str = "x",
    y_label: str = "y",
    log_x: bool = False,
    log_y: bool = False,
    labels: dict[str, Sequence[str]] | None = None,
    title: str | None = None,
    size: tuple[int, int] = (800, 480),
) -> Path:
    """Draw ``series`` (name, [(x, y), ...]) into ``png_path``; returns the path.

    ``log_x`` / ``log_y``: logarithmic axes (the values must be positive). ``labels``: per
    series name, one text per point drawn beside it (e.g. an entropy). With no points the
    axes are drawn with a "no data" note.
    """
    from PIL import Image, ImageDraw, ImageFont

    names = [n for n, pts in series if pts]
    legend_w = 8 + 7 * max((len(n) for n in names), default=0) + 30
    outside = len(names) > 5  # many series: the legend gets its own column, off the data
    width, height = size
    if outside:
        width += legend_w + 10
    left, right, top, bottom = 80, 20 + (legend_w + 10 if outside else 0), 30, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    plot_w, plot_h = width - left - right, height - top - bottom
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    draw.text(
        (left + plot_w // 2 - 3 * len(x_label), height - 20), x_label, fill="black", font=font
    )
    kept = [
        (n, [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]) for n, pts in series
    ]
    kept = [(n, pts) for n, pts in kept if pts]
    xs = [x for _, pts in kept for x, _ in pts]
    ys = [y for _, pts in kept for _, y in pts]
    if not xs:
        draw.text((left + plot_w // 2 - 20, top + plot_h // 2), "no data", fill="black", font=font)
        image.save(png_path)
        return Path(png_path)
    if (log_x and min(xs) <= 0) or (log_y and min(ys) <= 0):
        raise ValueError("a logarithmic axis needs positive values")
    fx = math.log10 if log_x else (lambda v: v)
    fy = math.log10 if log_y else (lambda v: v)

    def span(values: list[float], f) -> tuple[float, float]:  # noqa: ANN001
        lo, hi = min(map(f, values)), max(map(f, values))
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.05 * (hi - lo)
        return lo - pad, hi + pad

    x_lo, x_hi = span(xs, fx)
    y_lo, y_hi = span(ys, fy)

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (fx(x) - x_lo) / (x_hi - x_lo) * plot_w
        py = top + (1 - (fy(y) - y_lo) / (y_hi - y_lo)) * plot_h
        return px, py

    for tick in nice_ticks(x_lo, x_hi):
        px = left + (tick - x_lo) / (x_hi - x_lo) * plot_w
        draw.line([px, top + plot_h, px, top + plot_h + 5], fill="black")
        text = f"{10**tick:.3g}" if log_x else f"{tick:g}"
        draw.text((px - 10, top + plot_h + 8), text, fill="black", font=font)
    for tick in nice_ticks(y_lo, y_hi):
        py = top + (1 - (tick - y_lo) / (y_hi - y_lo)) * plot_h
        draw.line([left - 5, py, left, py], fill="black")
        draw.line([left, py, left + plot_w, py], fill=(225, 225, 225))
        text = f"{10**tick:.3g}" if log_y else f"{tick:.4g}"
        draw.text((4, py - 6), text, fill="black", font=font)

    for i, (name, points) in enumerate(kept):
        colour = COLOURS[i % len(COLOURS)]
        pixels = [to_px(x, y) for x, y in points]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels if len(pixels) == 1 or labels else ():
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        for (px, py), text in zip(pixels, (labels or {}).get(name, ()), strict=False):
            draw.text((px + 4, py - 12), text, fill=colour, font=font)
    legend_x = left + plot_w + 10 if outside else left + plot_w - legend_w - 4
    draw.rectangle(
        [legend_x, top + 4, legend_x + legend_w, top + 10 + 14 * len(kept)],
        fill="white",
        outline=(200, 200, 200),
    )
    for i, (name, _) in enumerate(kept):
        colour = COLOURS[i % len(COLOURS)]
        y = top + 12 + 14 * i
        draw.line([legend_x + 6, y, legend_x + 26, y], fill=colour, width=2)
        draw.text((legend_x + 31, y - 6), name, fill=colour, font=font)
    head = y_label + (", log scale" if log_y else "")
    draw.text((left, 8), head if title is None else f"{title}  ({head})", fill="black", font=font)
    image.save(png_path)
    return Path(png_path)
