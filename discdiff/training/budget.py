"""A wall-clock budget turned into a step count, so that warm-up and cosine decay end in time.

Someone with a rented hour knows how long they may train, not how many steps their machine
makes in that time. With ``TrainConfig.time_budget`` the Trainer measures its own rate and
fixes ``steps``:

1. The first ``settle`` steps are not timed (compilation, autotuning, allocator warm-up).
2. Then steps are timed until a window of ``window`` seconds has passed (2% of the budget,
   between 0.2 and 30 s): rate r = seconds per step, evaluation and checkpoint time left out.
3. steps = done + floor((0.98 * time left - c_final) / (r + c_eval / eval_every +
   c_ckpt / ckpt_every)), at most the cap (``steps`` as given), where c_eval and c_ckpt are
   the longest evaluation and checkpoint seen so far and c_final one of each at the last step
   (2% of the budget reserved for them until one has been seen).
4. The plan is made again whenever the timed steps have doubled, while the run is in the
   first half of its planned steps; after that the schedule's tail is left alone.

The checks happen at logging steps only (where the Trainer reads the device anyway), so the
budget adds no host sync. Time left counts every session of the run (the wall time saved in
each checkpoint), so a resumed run finishes inside the same budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["StepBudget"]


class StepBudget:
    """Plans the step count of a run with a wall-clock budget of ``seconds``.

    ``cap``: the most steps the run may take. ``spent``: seconds used by earlier sessions.
    ``clock`` / ``sync`` are injectable (tests use a fake clock; the Trainer's sync waits for
    the device so that the clock sees the work done, not the work queued).
    """

    def __init__(
        self,
        seconds: float,
        cap: int,
        *,
        eval_every: int = 0,
        ckpt_every: int = 0,
        spent: float = 0.0,
        settle: int = 3,
        window: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sync: Callable[[], object] = lambda: None,
    ) -> None:
        if not 0 < seconds < math.inf:
            raise ValueError(f"time budget must be a finite number of seconds > 0, got {seconds}")
        self.seconds = float(seconds)
        self.cap = int(cap)
        self.eval_every, self.ckpt_every = int(eval_every), int(ckpt_every)
        self.spent = float(spent)
        self.settle = int(settle)
        self.window = window if window is not None else min(30.0, max(0.2, 0.02 * seconds))
        self.clock, self.sync = clock, sync
        self.rate: float | None = None  # seconds per step, once measured
        self.planned_at: int | None = None
        self._cost = {"eval": 0.0, "ckpt": 0.0}
        self._start_time: float | None = None
        self._start_step = 0
        self._w_time: float | None = None  # the timed window: start time, step, overhead inside
        self._w_step = 0
        self._w_overhead = 0.0
        self._next_plan = 0  # timed steps at which to plan again

    # ---- what the Trainer tells it ------------------------------------------------------
    def begin(self, step: int) -> None:
        """The session starts (at ``step``): the clock of this session starts now."""
        self._start_time = self.clock()
        self._start_step = step

    def overhead(self, kind: str, seconds: float) -> None:
        """An evaluation (``"eval"``) or checkpoint (``"ckpt"``) took ``seconds``: kept out of
        the step rate, and the longest of each kind is planned for at every period."""
        self._cost[kind] = max(self._cost[kind], float(seconds))
        if self._w_time is not None:
            self._w_overhead += float(seconds)

    def used(self) -> float:
        """Seconds of the budget used so far, every session counted."""
        if self._start_time is None:
            return self.spent
        return self.spent + self.clock() - self._start_time

    def wants_check(self, step: int, planned: int) -> bool:
        """Whether a logging step at ``step`` should call :meth:`check` (the same answer on
        every rank: it depends on steps only)."""
        return self.planned_at is None or step < planned / 2

    def adopt(self, step: int) -> None:
        """The plan made at ``step`` was taken (on every rank: under DDP, rank 0's)."""
        self.planned_at = step

    def check(self, step: int) -> int | None:
        """At a logging step: the new planned step count, or None while still measuring."""
        if self._start_time is None:
            self.begin(step)
        if self._w_time is None:
            if step - self._start_step >= self.settle:
                self.sync()
                self._w_time, self._w_step, self._w_overhead = self.clock(), step, 0.0
            return None
        timed = step - self._w_step
        if timed <= 0:
            return None
        if self.rate is None and self.clock() - self._w_time - self._w_overhead < self.window:
            return None
        if self.rate is not None and timed < self._next_plan:
            return None
        self.sync()
        self.rate = max(self.clock() - self._w_time - self._w_overhead, 1e-9) / timed
        self._next_plan = 2 * timed
        return self.plan(step)

    def plan(self, step: int) -> int:
        """Steps in all such that the run ends inside the budget at the measured rate."""
        if self.rate is None:
            raise RuntimeError("no step rate measured yet")
        per_step = self.rate
        if self.eval_every:
            per_step += self._cost["eval"] / self.eval_every
        if self.ckpt_every:
            per_step += self._cost["ckpt"] / self.ckpt_every
        final = self._cost["eval"] + self._cost["ckpt"]
        if not self._cost["ckpt"]:
            final += 0.02 * self.seconds
        left = 0.98 * (self.seconds - self.used()) - final
        more = math.floor(left / per_step) if left > 0 else 0
        return max(step, min(self.cap, step + more))

    # ---- saved with each checkpoint -----------------------------------------------------
    def state(self, planned: int) -> dict[str, Any]:
        """What a checkpoint keeps: the budget, the cap, the plan and the rate it came from."""
        return {
            "seconds": self.seconds,
            "cap": self.cap,
            "steps": int(planned),
            "seconds_per_step": self.rate,
            "planned_at": self.planned_at,
        }

    @staticmethod
    def resumed(
        saved: Mapping[str, Any] | None, seconds: float, steps: int
    ) -> tuple[int, int, int | None]:
        """(cap, planned steps, step planned at) for a resumed run from its checkpoint's
        budget state. With the same budget the saved plan holds, and the cap is the saved one
        when ``steps`` is the saved plan or cap (the config then holds what the run wrote, not
        a new cap from the user); otherwise the run plans anew under the cap ``steps``."""
        if not (
            isinstance(saved, Mapping)
            and saved.get("seconds") == float(seconds)
            and isinstance(saved.get("steps"), int)
            and isinstance(saved.get("cap"), int)
            and isinstance(saved.get("planned_at"), int)
        ):
            return steps, steps, None
        cap = int(saved["cap"]) if steps in (saved["steps"], saved["cap"]) else steps
        return cap, min(int(saved["steps"]), cap), int(saved["planned_at"])
