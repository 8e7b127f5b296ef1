"""Every registered process: rows sum to one, alpha = 1 gives x_0, alpha = 0 gives the prior,
the posterior equals dense Bayes, and the config round-trips. Registering is all it takes."""

from __future__ import annotations

import pytest
import torch

from discdiff.processes import PROCESSES, make_process, process_config, process_from_config

K = 4


def build(name: str):
    factory = PROCESSES.get(name)
    opts = getattr(factory, "example_options", lambda k: {})(K)
    return make_process(name, K, **opts)


def times(proc):
    """(t = 0, an inner time, t = 1) on the process's grid."""
    T = proc.num_steps
    return (0.0, 0.5 if T is None else round(T / 2) / T, 1.0)


def joint_states(proc):
    return torch.arange(proc.num_states)


@pytest.mark.parametrize("name", PROCESSES.names())
def test_rows_sum_to_one_and_end_points(name):
    proc = build(name)
    x0 = torch.arange(K)  # (K,)
    t0, tm, t1 = times(proc)
    for t in (t0, tm, t1):
        q = proc.marginal(x0, t)  # (K, S)
        assert q.shape == (K, proc.num_states)
        torch.testing.assert_close(
            q.sum(-1).double(), torch.ones(K, dtype=torch.float64), atol=1e-5, rtol=0
        )
        assert bool((q >= 0).all())
    # alpha = 1 (t = 0) keeps x_0
    q0 = proc.marginal(x0, t0)
    torch.testing.assert_close(
        q0[:, :K].double(), torch.eye(K, dtype=torch.float64), atol=1e-6, rtol=0
    )
    # alpha = 0 (t = 1) is the prior, whatever x_0
    prior = proc.prior_log_probs().exp().double()
    q1 = proc.marginal(x0, t1).double()
    torch.testing.assert_close(q1, prior.expand_as(q1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", PROCESSES.names())
def test_posterior_equals_dense_bayes(name):
    """q(x_s | x_t, x_0) = q(x_t | x_s) q(x_s | x_0) / q(x_t | x_0), from the marginals alone."""
    proc = build(name)
    T = proc.num_steps
    s, t = (0.25, 0.75) if T is None else (round(T / 4) / T, round(3 * T / 4) / T)
    S = proc.num_states
    x0 = torch.arange(K).repeat_interleave(S)  # (K S,)
    x_t = torch.arange(S).repeat(K)  # (K S,)
    post = proc.posterior(x_t, x0, s, t).double()  # (K S, S)
    # the one-step kernel from s to t: rows q(x_t | x_s) via marginals of every start state
    # (exact for Markov processes: q(x_t | x_s = j) is the marginal from j over alpha_t / alpha_s)
    q_s = proc.marginal(x0, s).double()  # (K S, S)
    q_t = proc.marginal(x0, t).double()  # (K S, S)
    keep = q_t.gather(1, x_t[:, None]).squeeze(1) > 1e-12
    torch.testing.assert_close(
        post.sum(-1)[keep], torch.ones(int(keep.sum()), dtype=torch.float64), atol=1e-5, rtol=0
    )
    # Bayes through the two-time joint: sum_{x_s} post(x_s) q(x_s | x0) ... checked as
    # marginalisation: sum over x_t of q(x_t | x0) post(x_s | x_t, x0) = q(x_s | x0)
    recon = torch.zeros(K, S, dtype=torch.float64)
    for k in range(K):
        rows = slice(k * S, (k + 1) * S)
        recon[k] = (q_t[rows.start, :, None] * post[rows]).sum(0)
    torch.testing.assert_close(recon, q_s[::S], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", PROCESSES.names())
def test_config_round_trip(name):
    proc = build(name)
    again = process_from_config(process_config(proc))
    assert type(again) is type(proc)
    assert process_config(again) == process_config(proc)
    x0 = torch.arange(K)
    _, tm, _ = times(proc)
    torch.testing.assert_close(again.marginal(x0, tm), proc.marginal(x0, tm))


def dense_twin(proc):
    """(step matrices (T, S, S), T) of the process on its grid (8 steps for continuous time)."""
    from discdiff.processes import Dense, MixingProcess

    if isinstance(proc, Dense):
        return proc._Q.double(), proc.num_steps
    if isinstance(proc, MixingProcess):
        T = proc.num_steps or 8
        twin = Dense.from_process(proc, num_steps=T)
        return twin._Q.double(), T
    return None, None


@pytest.mark.parametrize("name", PROCESSES.names())
def test_posterior_is_bayes_with_explicit_matrices(name):
    """q(x_s | x_t, x_0) = Q_{s->t}[x_s, x_t] Qbar_s[x_0, x_s] / Qbar_t[x_0, x_t], matrices
    multiplied out here from the process's step matrices (its dense twin)."""
    proc = build(name)
    Q, T = dense_twin(proc)
    if Q is None:
        pytest.skip(f"{name}: no dense twin to multiply out (not a mixing or dense process)")
    ks, kt = T // 4, (3 * T) // 4
    S = proc.num_states
    eye = torch.eye(S, dtype=torch.float64)
    Qbar_s = eye.clone()
    for k in range(ks):
        Qbar_s = Qbar_s @ Q[k]
    Q_st = eye.clone()
    for k in range(ks, kt):
        Q_st = Q_st @ Q[k]
    x0 = torch.arange(K).repeat_interleave(S)  # (K S,)
    x_t = torch.arange(S).repeat(K)  # (K S,)
    joint = Qbar_s[x0] * Q_st[:, x_t].T  # (K S, S): q(x_s | x0) q(x_t | x_s)
    norm = joint.sum(-1, keepdim=True)
    ok = norm.squeeze(-1) > 1e-12
    want = joint[ok] / norm[ok]
    got = proc.posterior(x_t, x0, ks / T, kt / T).double()[ok]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", PROCESSES.names())
def test_sample_posterior_draws_the_posterior(name):
    """The reverse step's draw (a process's own, or the default Gumbel-max) has the law of
    :meth:`posterior` given x_0 logits, for every x_t state: frequencies of N draws within five
    standard errors of each probability, at an inner step and at the last one (s = 0)."""
    proc = build(name)
    T = proc.num_steps
    S, N = proc.num_states, 20000
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(S, K, generator=g) * 2  # one x_0 distribution per x_t state
    logits[0, 1] = -torch.inf  # a class the model rules out is never drawn
    x_t = torch.arange(S)
    for s, t in (
        (0.25, 0.75) if T is None else (round(T / 4) / T, round(3 * T / 4) / T),
        (0.0, 0.5),
    ):
        want = proc.posterior(x_t, logits, s, t).double()  # (S, S)
        draws = proc.sample_posterior(
            x_t.repeat(N, 1), logits.expand(N, S, K), s, t, generator=g
        )  # (N, S)
        assert draws.shape == (N, S) and draws.dtype == torch.long
        freq = torch.nn.functional.one_hot(draws, S).double().mean(0)  # (S, S)
        se = (want * (1 - want) / N).sqrt()
        assert ((freq - want).abs() <= 5 * se + 1e-9).all(), (name, s, t, freq - want)
        assert (freq[want == 0] == 0).all()
