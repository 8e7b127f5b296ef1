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
    from discdiff.plots import line_plot

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
    values = [y for _, pts in series for _, y in pts]
    log_y = bool(values) and min(values) > 0 and max(values) / min(values) > 20
    return line_plot(
        series, png_path, x_label="step", y_label="loss (nats)", log_y=log_y, size=size
    )
