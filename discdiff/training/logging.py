"""Training metrics: a CSV file (always), TensorBoard (when installed) and a loss-curve PNG.

``metrics.csv`` has one row per logged step and one column per metric name; a column that
appears later (the first evaluation) rewrites the header, earlier rows keeping empty cells.
On resume, rows after the checkpoint's step are dropped so that the file never holds two
histories. The PNG is drawn with Pillow (no matplotlib needed).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["MetricsLogger", "read_metrics", "plot_loss_curve", "logger"]

logger = logging.getLogger("discdiff.training")


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as dicts of floats (empty cells left out)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist")
    rows: list[dict[str, float]] = []
    with open(path, newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, float] = {}
            for key, value in raw.items():
                if key is None or value in (None, ""):
                    continue
                try:
                    row[key] = float(value)
                except ValueError:
                    continue
            rows.append(row)
    return rows


class MetricsLogger:
    """Append metric rows to ``run_dir/metrics.csv`` and, if available, TensorBoard.

    ``enabled=False`` (non-zero ranks) makes every method a no-op. ``tensorboard=True`` tries
    ``torch.utils.tensorboard``; when it cannot be imported, one notice is logged and the CSV
    carries on alone.
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.csv_path = self.run_dir / "metrics.csv"
        self._columns: list[str] = ["step"]
        self._writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.csv_path.is_file():
            with open(self.csv_path, newline="") as handle:
                header = next(csv.reader(handle), None)
            if header:
                self._columns = list(header)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning("tensorboard is not installed; logging to metrics.csv only")
            else:
                self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run re-does those steps)."""
        if not self.enabled or not self.csv_path.is_file():
            return
        with open(self.csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [r for r in rows if r.get("step") not in (None, "") and float(r["step"]) <= step]
        self._rewrite(kept)

    def _rewrite(self, rows: Sequence[Mapping[str, object]]) -> None:
        tmp = self.csv_path.with_name(self.csv_path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv_path)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` (name -> number) at ``step``."""
        if not self.enabled:
            return
        new = [k for k in metrics if k not in self._columns]
        if new:
            old_rows: list[dict[str, str]] = []
            if self.csv_path.is_file():
                with open(self.csv_path, newline="") as handle:
                    old_rows = list(csv.DictReader(handle))
            self._columns.extend(new)
            self._rewrite(old_rows)
        row = {"step": step, **{k: _fmt(v) for k, v in metrics.items()}}
        write_header = not self.csv_path.is_file()
        with open(self.csv_path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._columns, extrasaction="ignore")
            if write_header:
                writer.writeheader()
            writer.writerow(row)
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, float(value), step)
            self._writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard (the CSV is closed after every row)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _fmt(value: float) -> str:
    return repr(float(value))


# ---------------------------------------------------------------------------------------------
# Loss curve
# ---------------------------------------------------------------------------------------------

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
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


def plot_loss_curve(
    csv_path: str | Path,
    png_path: str | Path,
    columns: Sequence[str] = ("train_loss", "eval_loss", "eval_loss_ema"),
    *,
    size: tuple[int, int] = (800, 480),
) -> Path:
    """Draw the named columns of a metrics CSV against step into a PNG; returns its path.

    The y axis is logarithmic when every value is positive and they span more than a factor
    of 20 (early losses would otherwise flatten the rest of the curve). Columns that are
    absent are skipped; with no data at all the axes are drawn with a "no data" note.
    """
    from PIL import Image, ImageDraw, ImageFont

    rows = read_metrics(csv_path)
    series: list[tuple[str, list[tuple[float, float]]]] = []
    for name in columns:
        points = [
            (row["step"], row[name])
            for row in rows
            if "step" in row and name in row and math.isfinite(row[name])
        ]
        if points:
            series.append((name, points))

    width, height = size
    left, right, top, bottom = 80, 20, 30, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    plot_w, plot_h = width - left - right, height - top - bottom
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    draw.text((left + plot_w // 2 - 12, height - 20), "step", fill="black", font=font)

    values = [y for _, pts in series for _, y in pts]
    steps = [x for _, pts in series for x, _ in pts]
    if not values:
        draw.text((left + plot_w // 2 - 20, top + plot_h // 2), "no data", fill="black", font=font)
        image.save(png_path)
        return Path(png_path)

    log_y = min(values) > 0 and max(values) / min(values) > 20
    transform = math.log10 if log_y else (lambda v: v)
    ys = [transform(v) for v in values]
    y_lo, y_hi = min(ys), max(ys)
    if y_hi - y_lo < 1e-12:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    pad = 0.05 * (y_hi - y_lo)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    x_lo, x_hi = min(steps), max(steps)
    if x_hi - x_lo < 1e-12:
        x_lo, x_hi = x_lo - 1, x_hi + 1

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_lo) / (x_hi - x_lo) * plot_w
        py = top + (1 - (transform(y) - y_lo) / (y_hi - y_lo)) * plot_h
        return px, py

    for tick in _nice_ticks(x_lo, x_hi):
        px = left + (tick - x_lo) / (x_hi - x_lo) * plot_w
        draw.line([px, top + plot_h, px, top + plot_h + 5], fill="black")
        draw.text((px - 10, top + plot_h + 8), f"{tick:g}", fill="black", font=font)
    for tick in _nice_ticks(y_lo, y_hi):
        py = top + (1 - (tick - y_lo) / (y_hi - y_lo)) * plot_h
        draw.line([left - 5, py, left, py], fill="black")
        draw.line([left, py, left + plot_w, py], fill=(225, 225, 225))
        label = f"{10**tick:.3g}" if log_y else f"{tick:.4g}"
        draw.text((4, py - 6), label, fill="black", font=font)

    for i, (_, points) in enumerate(series):
        colour = _COLOURS[i % len(_COLOURS)]
        pixels = [to_px(x, y) for x, y in points]
        if len(pixels) == 1:
            px, py = pixels[0]
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        else:
            draw.line(pixels, fill=colour, width=2)
    # Legend in the top-right corner, on white so that curves never hide it.
    legend_x = left + plot_w - 150
    draw.rectangle(
        [legend_x, top + 4, left + plot_w - 4, top + 10 + 14 * len(series)],
        fill="white",
        outline=(200, 200, 200),
    )
    for i, (name, _) in enumerate(series):
        colour = _COLOURS[i % len(_COLOURS)]
        y = top + 12 + 14 * i
        draw.line([legend_x + 6, y, legend_x + 26, y], fill=colour, width=2)
        draw.text((legend_x + 31, y - 6), name, fill=colour, font=font)
    draw.text((left, 8), "loss (nats)" + (", log scale" if log_y else ""), fill="black", font=font)
    image.save(png_path)
    return Path(png_path)
