"""End to end: the shared Trainer, TransformerDenoiser, continuous ELBO and samplers together.

A small Markov chain (K = 5 states, 2 successors per state, started from its stationary law)
has an exact entropy per token H. A tiny transformer trained by the real :class:`Trainer` on
fresh chain sequences must (1) reach a held-out continuous ELBO within 10% of H (absorbing
process) and (2) produce samples whose bigram frequencies are close in total variation to the
chain's stationary bigram law pi(a) P(a, b). The TV bound is c * sqrt(#cells / #bigrams); the
test also checks that the bound separates what matters: exact chain samples pass it, while
samples from the unigram law alone (pi x pi: right token frequencies, no transitions) and an
untrained (uniform) model fail it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from discdiff.losses import continuous_elbo
from discdiff.nn import (
    TransformerConfig,
    TransformerDenoiser,
    denoiser_config,
    denoiser_from_config,
)
from discdiff.processes import Absorbing, Process, Uniform
from discdiff.samplers import AncestralSampler, FirstHittingSampler, Sampler
from discdiff.schedules import LogLinear
from discdiff.training import TrainConfig, Trainer, load_model

K, L = 5, 16  # states, sequence length
SUCCESSORS = 2  # non-zero entries per row of the transition matrix
TV_FACTOR = 2.0  # TV bound = TV_FACTOR * sqrt(K^2 / #bigrams)


# ---- the chain -------------------------------------------------------------------------------
def markov_chain(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random sparse transition matrix P (K, K) and its stationary law pi (K,), float64.

    Each row has ``SUCCESSORS`` non-zero entries; the seed is chosen so that the chain is
    irreducible and aperiodic, which the returned pi (unique, all positive) confirms.
    """
    g = torch.Generator().manual_seed(seed)
    P = torch.zeros(K, K, dtype=torch.float64)
    for a in range(K):
        nxt = torch.randperm(K, generator=g)[:SUCCESSORS]
        w = torch.rand(SUCCESSORS, generator=g, dtype=torch.float64) + 0.3
        P[a, nxt] = w / w.sum()
    # stationary law: the left eigenvector of P for eigenvalue 1, via (P^T - I) pi = 0, sum = 1
    A = torch.cat([P.T - torch.eye(K, dtype=torch.float64), torch.ones(1, K, dtype=torch.float64)])
    b = torch.zeros(K + 1, dtype=torch.float64)
    b[-1] = 1.0
    pi = torch.linalg.lstsq(A, b.unsqueeze(1)).solution.squeeze(1)
    return P, pi


def entropy(p: torch.Tensor) -> float:
    """Shannon entropy in nats of a probability vector."""
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def entropy_per_token(P: torch.Tensor, pi: torch.Tensor, length: int) -> float:
    """Exact H(x_1..x_L) / L for the chain started at pi: [H(pi) + (L - 1) sum_a pi_a H(P_a)] / L."""
    rate = sum(float(pi[a]) * entropy(P[a]) for a in range(P.shape[0]))
    return (entropy(pi) + (length - 1) * rate) / length


def sample_chain(P: torch.Tensor, pi: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """n sequences (n, L) of the chain started from pi."""
    x = torch.empty(n, L, dtype=torch.long)
    x[:, 0] = torch.multinomial(pi.float().expand(n, K), 1, generator=gen).squeeze(1)
    Pf = P.float()
    for i in range(1, L):
        x[:, i] = torch.multinomial(Pf[x[:, i - 1]], 1, generator=gen).squeeze(1)
    return x


def chain_nll(P: torch.Tensor, pi: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact -log p(x) (n,) under the chain, in nats."""
    logp = pi.log()[x[:, 0]] + P.log()[x[:, :-1], x[:, 1:]].sum(1)
    return -logp


def bigram_law(x: torch.Tensor) -> torch.Tensor:
    """Empirical frequencies (K, K) of adjacent pairs (x_i, x_{i+1}) over all sequences."""
    counts = torch.zeros(K * K, dtype=torch.float64)
    pairs = (x[:, :-1] * K + x[:, 1:]).flatten()
    counts.index_add_(0, pairs, torch.ones(pairs.numel(), dtype=torch.float64))
    return (counts / counts.sum()).view(K, K)


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def tv_bound(num_sequences: int) -> float:
    return TV_FACTOR * math.sqrt(K * K / (num_sequences * (L - 1)))


# ---- the model -------------------------------------------------------------------------------
def tiny_denoiser(process: Process, seed: int = 0) -> TransformerDenoiser:
    cfg = TransformerConfig(
        num_states=process.num_states,
        num_classes=K,
        num_layers=2,
        d_model=64,
        num_heads=4,
        cond_dim=32,
        max_len=L,
    )
    torch.manual_seed(seed)
    return TransformerDenoiser(cfg)


def train_on_chain(
    process: Process, run_dir: Path, steps: int, batch: int, lr: float, seed: int = 0
) -> TransformerDenoiser:
    """Train with the shared Trainer on fresh chain sequences; reload from the run dir."""
    P, pi = markov_chain()
    gen = torch.Generator().manual_seed(seed + 1)
    batches = [sample_chain(P, pi, batch, gen) for _ in range(steps)]  # no repeats: fresh data

    def loss_fn(model, x0, g):
        return continuous_elbo(process, model, x0, boundary=False, generator=g)  # (B,)

    model = tiny_denoiser(process, seed)
    config = TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=lr,
        warmup_steps=steps // 20,
        ckpt_every=0,
        log_every=50,
        seed=seed,
    )
    trainer = Trainer(
        model,
        loss_fn,
        batches,
        config,
        run_dir,
        model_config=denoiser_config(model),
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    trainer.fit()
    return load_model(run_dir, denoiser_from_config)  # the checkpoint round trip, eval mode


@torch.no_grad()
def heldout_elbo(process: Process, model, x: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """Bound values (draws * n,) in nats per sequence: continuous_elbo with its boundary terms."""
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([continuous_elbo(process, model, x, generator=gen) for _ in range(draws)])


@torch.no_grad()
def sample_bigrams(model, process: Process, sampler: Sampler, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = sampler.sample(model, process, (n, L), generator=gen).samples  # (n, L)
    return bigram_law(x)


def true_bigram_law(P: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """The stationary bigram law pi(a) P(a, b) (K, K): the law of every adjacent pair."""
    return pi[:, None] * P


# ---- tests -----------------------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """Train on one thread: the matrices are tiny (d = 64), so a second thread gains little and
    costs a lot on a shared machine (measured: about 35-40 s CPU on one thread vs 160 s on two under
    load), and the trained weights, hence the checked figures, do not depend on the core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_chain_helpers_are_exact():
    """pi is stationary, H matches the exact NLL of chain samples, bigrams follow pi(a) P(a, b)."""
    P, pi = markov_chain()
    assert torch.allclose(pi @ P, pi, atol=1e-12) and bool((pi > 0).all())
    assert torch.allclose(P.sum(1), torch.ones(K, dtype=torch.float64))
    assert int((P > 0).sum()) == K * SUCCESSORS
    H = entropy_per_token(P, pi, L)
    x = sample_chain(P, pi, 4000, torch.Generator().manual_seed(5))
    nll = chain_nll(P, pi, x) / L  # (n,) nats per token
    se = float(nll.std()) / math.sqrt(nll.numel())
    assert abs(float(nll.mean()) - H) < 4 * se
    # exact samples pass the TV bound; the unigram law and the uniform law are far outside it
    true = true_bigram_law(P, pi)
    bound = tv_bound(1000)
    assert tv(bigram_law(x[:1000]), true) < bound / 2
    assert tv(pi[:, None] * pi[None, :], true) > 3 * bound
    assert tv(torch.full((K, K), 1.0 / K**2, dtype=torch.float64), true) > 3 * bound


def test_one_diffusion_step_reduces_the_loss_on_a_fixed_batch(tmp_path):
    """The Trainer's step on continuous_elbo lowers the same loss (same noise) on its batch."""
    P, pi = markov_chain()
    x0 = sample_chain(P, pi, 32, torch.Generator().manual_seed(7))  # (B, L)
    proc = Absorbing(K, LogLinear())
    model = tiny_denoiser(proc)

    def loss_fn(m, x, g):
        return continuous_elbo(proc, m, x, boundary=False, generator=g)

    def fixed_noise_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model, x0, torch.Generator().manual_seed(11)).mean())

    before = fixed_noise_loss()
    trainer = Trainer(
        model,
        loss_fn,
        [x0],
        TrainConfig(steps=1, batch_size=32, lr=1e-2, ckpt_every=0),
        tmp_path,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    trainer.fit()
    after = fixed_noise_loss()
    assert math.isfinite(before) and after < before


def test_absorbing_transformer_learns_a_markov_chain(tmp_path, one_thread):
    """ELBO within 10% of the exact entropy; first-hitting samples have the chain's bigrams."""
    P, pi = markov_chain()
    H = entropy_per_token(P, pi, L)
    proc = Absorbing(K, LogLinear())
    model = train_on_chain(proc, tmp_path, steps=600, batch=128, lr=3e-3)

    n = 1000
    test = sample_chain(P, pi, n, torch.Generator().manual_seed(2))
    vals = heldout_elbo(proc, model, test, draws=4, seed=3) / L  # (4n,) nats per token
    elbo = float(vals.mean())
    se = float(vals.std()) / math.sqrt(vals.numel())
    nll = float(chain_nll(P, pi, test).mean()) / L  # the test set's exact NLL per token
    true = true_bigram_law(P, pi)
    tv_model = tv(sample_bigrams(model, proc, FirstHittingSampler(), n, seed=4), true)
    print(
        f"\nabsorbing: H = {H:.4f} nats/token, test NLL {nll:.4f}, ELBO {elbo:.4f} +- {se:.4f} "
        f"({elbo / H:.3f} x H); bigram TV {tv_model:.4f} (bound {tv_bound(n):.4f})"
    )
    assert elbo >= nll - 4 * se  # a bound cannot beat the exact likelihood
    assert elbo <= 1.10 * H
    assert tv_model <= tv_bound(n)


@pytest.mark.slow
def test_uniform_transformer_learns_a_markov_chain(tmp_path, one_thread):
    """The uniform process, UDLM-style ELBO: a looser ELBO bound (1.25 x H), the same TV bound.

    Uniform-state diffusion learns more slowly than absorbing (every position may be corrupted
    and the denoiser must also tell noise from signal), so it trains longer and is held to a
    looser standard; ancestral sampling with 64 steps adds a small factorisation error.
    """
    P, pi = markov_chain()
    H = entropy_per_token(P, pi, L)
    proc = Uniform(K, LogLinear())
    model = train_on_chain(proc, tmp_path, steps=1200, batch=128, lr=1e-2)

    n = 1000
    test = sample_chain(P, pi, n, torch.Generator().manual_seed(2))
    vals = heldout_elbo(proc, model, test, draws=4, seed=3) / L  # (4n,) nats per token
    elbo = float(vals.mean())
    se = float(vals.std()) / math.sqrt(vals.numel())
    nll = float(chain_nll(P, pi, test).mean()) / L
    true = true_bigram_law(P, pi)
    tv_model = tv(sample_bigrams(model, proc, AncestralSampler(64), n, seed=4), true)
    print(
        f"\nuniform: H = {H:.4f} nats/token, test NLL {nll:.4f}, ELBO {elbo:.4f} +- {se:.4f} "
        f"({elbo / H:.3f} x H); bigram TV {tv_model:.4f} (bound {tv_bound(n):.4f})"
    )
    assert elbo >= nll - 4 * se
    assert elbo <= 1.25 * H
    assert tv_model <= tv_bound(n)
