"""Every registered sampler: shapes, fixed positions kept, same seed same samples, denoiser
calls reported, config round trip. It runs on each registered process it accepts."""

from __future__ import annotations

import json

import pytest
import torch

from discdiff.processes import PROCESSES, make_process
from discdiff.samplers import SAMPLERS, Sampler, make_sampler
from discdiff.samplers.registry import sampler_options

K, B, L = 5, 3, 7


def processes():
    out = {}
    for name in PROCESSES.names():
        factory = PROCESSES.get(name)
        opts = getattr(factory, "example_options", lambda k: {})(K)
        out[name] = make_process(name, K, **opts)
    return out


class Fixed(torch.nn.Module):
    """A denoiser whose logits depend on x_t only (so every sampler's contract is testable)."""

    def __init__(self, num_states: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(num_states, K, generator=g))

        self.calls = 0

    def forward(self, x_t, t, cond=None):
        self.calls += 1
        return self.table[x_t]  # (B, L, K)


def usable(sampler: Sampler):
    found = []
    for name, proc in processes().items():
        try:
            sampler.check_processes({"x": proc})
        except TypeError:
            continue
        found.append((name, proc))
    return found


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_contract(name):
    sampler = make_sampler(name, steps=6)
    pairs = usable(sampler)
    assert pairs, f"sampler {name!r} accepts none of the registered processes"
    for pname, proc in pairs:
        den = Fixed(proc.num_states)
        values = torch.randint(0, K, (B, L), generator=torch.Generator().manual_seed(1))
        given = torch.zeros(B, L, dtype=torch.bool)
        given[:, :2] = True
        a, b = (
            sampler.sample(
                den, proc, (B, L), fixed=(values, given), generator=torch.Generator().manual_seed(3)
            )
            for _ in range(2)
        )
        assert a.samples.shape == (B, L), (name, pname)
        assert a.samples.dtype == torch.long
        assert int(a.samples.min()) >= 0 and int(a.samples.max()) < K, (name, pname)
        assert torch.equal(a.samples[given], values[given]), (name, pname)
        assert torch.equal(a.samples, b.samples), (name, pname)
        assert isinstance(a.num_calls, int) and a.num_calls >= 1, (name, pname)
        assert den.calls == a.num_calls + b.num_calls, (name, pname)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_config_round_trip(name):
    takes = sampler_options(SAMPLERS.get(name))
    sampler = make_sampler(name, steps=6, temperature=0.7 if "temperature" in takes else 1.0)
    cfg = json.loads(json.dumps(sampler.config()))
    again = Sampler.from_config(cfg)
    assert type(again) is type(sampler)
    assert again.config() == sampler.config()


#: (sampler, process) pairs known to read the device every step, and why; each is checked to
#: still do so, so that a fix has to remove its entry here
READS_PER_STEP = {
    ("ancestral", "gaussian"): "the dense process builds each example's (S, S) span on the host "
    "from its (s, t) step indices (processes/dense.py posterior_log)",
}


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_makes_no_host_sync_per_step(name):
    """The ops that make a GPU wait for its host (value reads, boolean-mask indexing, nonzero:
    counted on the CPU under accelerator rules) happen a fixed number of times per sample,
    not once per step or per token: twice the steps and twice the length, the same count
    (SUNDAE's early stop reads once every STOP_CHECK_EVERY steps)."""
    from discdiff.checks import as_if_accelerator
    from discdiff.samplers.sundae import STOP_CHECK_EVERY
    from tests._host_syncs import HostSyncs

    runs = ((8, L), (16, 2 * L))
    allowed = (runs[1][0] - runs[0][0]) // STOP_CHECK_EVERY if name == "sundae" else 0
    for pname, proc in usable(make_sampler(name, steps=4)):
        counts, where = [], []
        for steps, length in runs:
            sampler = make_sampler(name, steps=steps)
            syncs = HostSyncs()
            with as_if_accelerator(), syncs:
                sampler.sample(Fixed(proc.num_states), proc, (B, length),
                               generator=torch.Generator().manual_seed(3))  # fmt: skip
            counts.append(syncs.count)
            where = syncs.where
        grows = counts[1] - counts[0] > allowed
        if (name, pname) in READS_PER_STEP:
            assert grows, f"{name} on {pname} no longer reads per step: drop its entry"
            continue
        assert not grows, (name, pname, counts, where[-1:])
