"""What a task asks of the registries before it uses a name: which processes and schedules
fit it (a probe build, no class tests), and whether a denoiser's size fits in memory (counted
on the meta device, nothing allocated)."""

from __future__ import annotations

from typing import Any

import torch

from discdiff.nn import denoiser_from_config

__all__ = [
    "process_problem",
    "usable_processes",
    "continuous_schedules",
    "check_continuous_schedule",
    "available_memory",
    "check_model_size",
    "check_parameter_bytes",
    "check_sampling_size",
    "count_parameters_of",
    "check_sample_count",
    "check_denoiser_calls",
    "MAX_DENOISER_CALLS",
]


def process_problem(name: str, *, continuous_elbo: bool, options_ok: bool = False) -> str | None:
    """Why the registered process ``name`` cannot serve a task (None if it can).

    The probe builds it over 4 classes: on the log-linear schedule, or on a 2-step discrete
    one for a factory marked ``discrete_time``; with its ``example_options`` only if the task
    supplies such options itself (``options_ok``: molecules give the data's priors).
    ``continuous_elbo``: the task trains with the continuous-time ELBO (needs ``rate_kl``).
    """
    from discdiff.processes import PROCESSES, make_process

    try:
        factory = PROCESSES.get(name)
        discrete = bool(getattr(factory, "discrete_time", False))
        sched: Any = {"type": "d3pm-linear", "num_steps": 2} if discrete else "loglinear"
        opts = getattr(factory, "example_options", lambda k: {})(4) if options_ok else {}
        opts.pop("schedule", None)
        probe = make_process(name, 4, schedule=sched, **opts)
    except (ValueError, TypeError) as err:
        return str(err)
    if continuous_elbo and (
        not callable(getattr(probe, "rate_kl", None)) or probe.num_steps is not None
    ):
        return "it has no continuous-time ELBO"
    return None


def usable_processes(*, continuous_elbo: bool, options_ok: bool = False) -> list[str]:
    """The registered processes a task can use (see :func:`process_problem`)."""
    from discdiff.processes import PROCESSES

    return [
        n
        for n in PROCESSES.names()
        if process_problem(n, continuous_elbo=continuous_elbo, options_ok=options_ok) is None
    ]


def continuous_schedules() -> list[str]:
    """Registered schedules that build with default options and are continuous in time."""
    from discdiff.schedules import SCHEDULES, make_schedule

    out = []
    for n in SCHEDULES.names():
        try:
            if make_schedule(n).num_steps is None:
                out.append(n)
        except (ValueError, TypeError):
            continue
    return out


def check_continuous_schedule(spec: str) -> None:
    """ValueError unless ``spec`` (a name, or ``NAME:VALUE`` / ``NAME:KEY=VALUE,...``) builds a
    continuous-time schedule; the message lists the registered ones."""
    from discdiff.schedules import make_schedule

    cont = continuous_schedules()
    name = spec.partition(":")[0]
    if name not in cont:
        raise ValueError(
            f"schedule={spec!r}: {name!r} is not one of {', '.join(cont)} (registered "
            "continuous-time schedules; options as NAME:VALUE or NAME:KEY=VALUE, e.g. kappa-poly:2)"
        )
    try:
        sched = make_schedule(spec)
    except (KeyError, ValueError) as err:
        raise ValueError(f"schedule={spec!r}: {err}") from None
    if sched.num_steps is not None:
        raise ValueError(f"schedule={spec!r} is discrete-time; expected one of {', '.join(cont)}")


def available_memory() -> int | None:
    """Bytes of memory this process could still allocate (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def count_parameters_of(build: Any, layers: Any = None) -> int:
    """Parameters of the module ``build(num_layers)`` makes, counted on the meta device
    (nothing allocated). With ``layers`` above 8 the count is extrapolated from one and two
    layers first (parameters grow linearly with depth), and refused there if it cannot fit:
    building 10^5 layers, even on the meta device, took minutes."""

    def count(n: Any) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in build(n).parameters())

    if isinstance(layers, int) and not isinstance(layers, bool) and layers > 8:
        one, two = count(1), count(2)
        check_parameter_bytes(one + (layers - 1) * (two - one))
    return count(layers)


def check_model_size(denoiser_config: Any, limit: int | None = None) -> int:
    """Parameters of a denoiser config, counted on the meta device (nothing allocated);
    ValueError if its float32 weights alone would not fit in ``limit`` bytes (default: the
    memory available), so a config with ``d_model = 2**20`` fails at once, not after minutes."""
    inner = denoiser_config.get("config") if isinstance(denoiser_config, dict) else None
    layers = inner.get("num_layers") if isinstance(inner, dict) else None

    def build(n: Any) -> Any:
        if n is None:
            return denoiser_from_config(denoiser_config)
        return denoiser_from_config({**denoiser_config, "config": {**inner, "num_layers": n}})

    n = count_parameters_of(build, layers)
    check_parameter_bytes(n, limit)
    return n


def check_parameter_bytes(n: int, limit: int | None = None) -> None:
    """ValueError if ``n`` float32 parameters exceed ``limit`` bytes (default: available)."""
    need = 4 * n
    cap = limit if limit is not None else available_memory()
    if cap is not None and need > cap:
        raise ValueError(
            f"the denoiser config asks for {n:,} parameters ({need / 2**30:.1f} GiB in float32), "
            f"more than the {cap / 2**30:.1f} GiB of memory available"
        )


def device_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes free on ``device``: a GPU's free memory, else :func:`available_memory`."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    return available_memory()


#: the most denoiser calls one sampling or scoring request may ask for: 10^7 calls is hours of
#: a small model on a CPU and days of a large one on a GPU; more is a typo, not a plan
MAX_DENOISER_CALLS = 10**7


def check_denoiser_calls(calls: int, what: str, fix: str) -> None:
    """Refuse, up front and in one line, a request of more than :data:`MAX_DENOISER_CALLS`
    denoiser calls (it would run for days with no end in sight); ``fix`` says what to ask
    for instead."""
    if calls > MAX_DENOISER_CALLS:
        raise ValueError(
            f"{what} takes about {calls:,} denoiser calls, more than {MAX_DENOISER_CALLS:,} "
            f"(days of work): {fix}"
        )


def check_sample_count(n: int, per_sample: int, what: str = "samples") -> None:
    """Refuse up front, in one line, ``n`` samples of about ``per_sample`` bytes each (what the
    command keeps of each until it ends) that cannot fit in the memory available: an
    allocator's traceback, or the kernel's kill, minutes in otherwise."""
    host = available_memory()
    need = n * per_sample
    if host is not None and need > host:
        raise ValueError(
            f"{n:,} {what} would take about {need / 2**30:.1f} GiB ({per_sample:,} bytes each), "
            f"more than the {host / 2**30:.1f} GiB of memory available: ask for fewer"
        )


def check_sampling_size(
    batch: int,
    length: int,
    num_states: int,
    width: int,
    heads: int,
    *,
    output_bytes: int = 0,
    device: torch.device | str | None = None,
) -> int:
    """Bytes one sampling step of ``batch`` sequences of ``length`` tokens takes (the logits,
    their log-softmax and draws, float32, (B, L, S) each; the denoiser's live activations,
    about 8 of (B, L, width); one layer's attention scores, (B, heads, L, L)), checked with the
    ``output_bytes`` the whole command keeps against the memory free on ``device``: a request
    that cannot fit is one ValueError up front instead of an allocator's traceback minutes in."""
    step = 4 * batch * length * (3 * num_states + 8 * width) + 4 * batch * heads * length**2
    cap = device_memory(device)
    if cap is not None and step > cap:
        raise ValueError(
            f"sampling {batch:,} sequences of {length:,} tokens at once needs about "
            f"{step / 2**30:.1f} GiB, more than the {cap / 2**30:.1f} GiB free: draw fewer at once "
            "(a smaller -n or --batch-size) or shorter ones"
        )
    host = available_memory()
    if host is not None and output_bytes > host:
        raise ValueError(
            f"the samples alone would take about {output_bytes / 2**30:.1f} GiB, more than the "
            f"{host / 2**30:.1f} GiB of memory available: ask for fewer or shorter samples"
        )
    return step
