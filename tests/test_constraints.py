"""The constraint hook (discdiff.constraints): a task's rule applied by any sampler that takes
one, in law the plain sampler when the rule allows everything, refused in one line by a sampler
that cannot apply it; the molecule guard through it with a newcomer's sampler."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from discdiff.categorical import sample_categorical
from discdiff.constraints import Constraint, as_constraint
from discdiff.processes import Marginal, Uniform
from discdiff.samplers import SAMPLERS, AncestralSampler, make_sampler, register_sampler
from discdiff.schedules import LogLinear


class Free(Constraint):
    """Allows everything: x_0 drawn per position from the prediction."""

    def draw(self, logp, fixed, generator, last):
        return {k: sample_categorical(v, generator) for k, v in logp.items()}


class NoTwo(Constraint):
    """Class 2 is never drawn (its mass moves to the others)."""

    def draw(self, logp, fixed, generator, last):
        out = {}
        for k, v in logp.items():
            v = v.clone()
            v[..., 2] = -math.inf
            out[k] = sample_categorical(v, generator)
        return out


K, L = 3, 2


def _model(x, t, cond=None):
    """A denoiser whose prediction depends on the state and the time (so the explicit x_0
    path and the posterior mixture are compared on a non-trivial reverse chain)."""
    base = torch.tensor([0.3, -0.4, 0.2])
    logits = base + 0.7 * torch.nn.functional.one_hot(x.flip(-1), K).float()
    return logits + 0.5 * t.view(-1, 1, 1)


def _law(samples: torch.Tensor) -> torch.Tensor:
    idx = samples[:, 0] * K + samples[:, 1]
    return torch.bincount(idx, minlength=K**L).double() / samples.shape[0]


@pytest.mark.parametrize("steps", ["last", "all"])
def test_a_rule_that_allows_everything_leaves_the_law_unchanged(steps):
    """Drawing x_0 explicitly then x_s ~ q(x_s | x_t, x_0) is, in law, the posterior averaged
    over the prediction (what the plain sampler draws): TV within its Monte-Carlo error."""
    B = 40_000
    proc = Uniform(K, LogLinear())
    runs = []
    for seed, rule in ((1, Free(steps)), (2, None)):
        s = AncestralSampler(6, constraint=rule)
        res = s.sample(_model, proc, (B, L), generator=torch.Generator().manual_seed(seed))
        runs.append(_law(res.samples))
    a, b = runs
    tv = 0.5 * float((a - b).abs().sum())
    bound = 2 * float((b * (1 - b) / B).sqrt().sum()) + math.sqrt(math.log(1e6) / B)
    assert tv < bound, (tv, bound)


def test_the_rule_decides_the_sample_and_the_last_step_only_by_default():
    """steps="last": the path up to the last step is the plain sampler's, draw for draw; the
    sample obeys the rule (no class 2), which the plain sampler's does not (the test has
    power). steps="all": the rule acts on every step's x_0 (the path differs earlier)."""
    B = 512
    proc = Marginal(torch.tensor([0.2, 0.3, 0.5]), LogLinear())
    kw = dict(generator=None, return_trajectory=True)

    def run(rule):
        g = torch.Generator().manual_seed(5)
        return AncestralSampler(8, constraint=rule).sample(
            _model, proc, (B, L), **{**kw, "generator": g}
        )

    plain, last, every = run(None), run(NoTwo()), run(NoTwo("all"))
    for a, b in zip(plain.trajectory[:-1], last.trajectory[:-1], strict=True):
        assert torch.equal(a, b)
    assert bool((plain.samples == 2).any())
    assert not bool((last.samples == 2).any()) and not bool((every.samples == 2).any())
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.trajectory[:-1], every.trajectory[:-1], strict=True)
    )


def test_config_round_trip_and_bad_settings():
    s = AncestralSampler(4, constraint=NoTwo("all"))
    cfg = s.config()
    assert cfg["constraint"]["steps"] == "all" and cfg["constraint"]["type"].endswith(":NoTwo")
    back = as_constraint(cfg["constraint"])
    assert isinstance(back, NoTwo) and back.steps == "all"
    with pytest.raises(ValueError, match="constraint steps must be one of"):
        NoTwo("first")
    with pytest.raises(TypeError, match="must be a Constraint"):
        AncestralSampler(4, constraint={"type": "collections:OrderedDict"})
    with pytest.raises(ValueError, match="final='argmax' cannot apply it"):
        AncestralSampler(4, constraint=NoTwo(), final="argmax")


def test_a_sampler_that_cannot_apply_a_rule_refuses_it_in_one_line():
    takes = [n for n in SAMPLERS.names() if "constraint" in _options(n)]
    assert "ancestral" in takes
    for name in set(SAMPLERS.names()) - set(takes):
        with pytest.raises(ValueError, match="has no option") as err:
            make_sampler(name, steps=4, constraint=NoTwo())
        assert len(str(err.value).splitlines()) == 1


def _options(name):
    from discdiff.samplers import sampler_options

    return sampler_options(SAMPLERS.get(name))


def test_the_molecule_guard_reaches_a_newcomers_sampler_and_is_refused_by_others():
    """The issue's case: a temperature-schedule sampler (a subclass of the ancestral one that
    keeps its reverse step) dropped the valence guard without a word. Now it applies it: every
    sample of a model that wants over-bonded atoms fits the capacities; a sampler that takes no
    constraint is refused in one line unless the guard is turned off."""
    from discdiff.chem.graph import GraphVocab, encode_smiles, num_edges
    from discdiff.chem.valence import atom_capacities, bond_orders
    from discdiff.tasks.molecules import MoleculeTask

    @register_sampler("cooling-test", replace=True)
    class Cooling(AncestralSampler):
        def __init__(self, steps, temperature=1.0, grid_power=1.0, constraint=None):
            super().__init__(steps, temperature, grid_power=grid_power, constraint=constraint)

    try:
        graphs, _ = encode_smiles(["CC(=O)O", "CCN", "OCC#N", "FC(F)F", "C1CC1", "CCOC"] * 4,
                                  GraphVocab.qm9())  # fmt: skip
        task = MoleculeTask.from_graphs(graphs, GraphVocab.qm9(), max_nodes=6)
        vocab = task.vocab
        n, B = 6, 64
        ka, kb = vocab.num_atom_classes, vocab.num_bond_classes

        def greedy(x, t, cond=None):  # fluorines joined by triple bonds
            atoms = torch.full((*x["atoms"].shape, ka), -3.0)
            atoms[..., vocab.atoms.index(("F", 0))] = 3.0
            bonds = torch.full((*x["bonds"].shape, kb), -3.0)
            bonds[..., 3] = 3.0
            return {"atoms": atoms, "bonds": bonds}

        counts = torch.full((B,), n)
        s = task.make_sampler("cooling-test", steps=6)
        assert s.constraint is not None
        fields = task.sample_fields(greedy, counts, sampler=s, generator=torch.Generator())
        atoms, bonds = fields["atoms"], fields["bonds"]
        ii, jj = torch.triu_indices(n, n, 1)
        val = torch.zeros(B, n)
        orders = bond_orders(vocab)[bonds]
        val.index_add_(1, ii, orders)
        val.index_add_(1, jj, orders)
        assert bool((val <= atom_capacities(vocab)[atoms] + 1e-6).all())
        assert bonds.shape == (B, num_edges(n))
        unguarded = task.make_sampler("cooling-test", steps=6, valence_guard=False)
        assert unguarded.constraint is None
        for name in ("tau-leaping", "first-hitting"):
            if name in SAMPLERS.names():
                with pytest.raises(ValueError, match="cannot apply the valence guard") as err:
                    task.make_sampler(name)
                assert len(str(err.value).splitlines()) == 1
    finally:
        SAMPLERS.unregister("cooling-test")


def test_the_enumerated_law_of_a_one_step_constrained_draw():
    """One step (t = 1 -> 0) of the ancestral sampler with the rule: the sample's law is the
    prediction restricted to the allowed classes and renormalised, checked against the exact
    law over all K^L outcomes."""
    B = 60_000
    proc = Uniform(K, LogLinear())
    res = AncestralSampler(1, constraint=NoTwo()).sample(
        _model, proc, (B, L), generator=torch.Generator().manual_seed(9)
    )
    got = _law(res.samples)
    # the prior at t = 1 is uniform: average the restricted prediction over every x_1
    want = torch.zeros(K**L, dtype=torch.float64)
    for x1 in itertools.product(range(K), repeat=L):
        logits = _model(torch.tensor([x1]), torch.ones(1)).double()[0]  # (L, K)
        logits[:, 2] = -math.inf
        p = logits.softmax(-1)
        for a, b in itertools.product(range(K), repeat=L):
            want[a * K + b] += p[0, a] * p[1, b] / K**L
    se = (want * (1 - want) / B).sqrt()
    assert bool(((got - want).abs() <= 5 * se + 1e-12).all()), (got, want)
