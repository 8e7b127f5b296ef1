"""An exact denoiser for a known joint over short sequences, computed by enumeration.

``ExactOracle(joint, process)`` returns, for noisy x_t at time t, the logits of the exact
per-position conditionals p(x0_i | x_t) under the joint: every one of the V^L clean sequences is
weighted by p(x0) * prod_i q(x_t_i | x0_i, t). Used to test losses (every ELBO >= NLL) and
samplers (first-hitting sampling reproduces the joint).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from discdiff.processes.base import Process


def random_joint(
    vocab: int, length: int, generator: torch.Generator, concentration: float = 0.5
) -> Tensor:
    """A random joint distribution over vocab^length sequences, shape (vocab,) * length."""
    u = torch.rand(vocab**length, generator=generator, dtype=torch.float64)
    w = (-torch.log(u)) ** (1.0 / concentration)  # seeded, heavy-tailed positive weights
    p = w / w.sum()
    return p.reshape((vocab,) * length)


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def all_sequences(vocab: int, length: int) -> Tensor:
    """Every sequence of the joint's support in row-major order, (vocab^length, length)."""
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)), dtype=torch.long)


class ExactOracle:
    """Callable denoiser ``(x_t, t, cond=None) -> logits (B, L, V)`` with exact conditionals."""

    def __init__(self, joint: Tensor, process: Process) -> None:
        self.vocab = joint.shape[0]
        self.length = joint.dim()
        if process.num_classes != self.vocab:
            raise ValueError("the process's classes must match the joint's vocabulary")
        self.process = process
        self.seqs = all_sequences(self.vocab, self.length)  # (N, L)
        self.log_joint = torch.log(joint.reshape(-1).double())  # (N,)
        self.calls = 0

    def __call__(self, x_t: Tensor, t: Tensor, cond: object = None) -> Tensor:
        self.calls += 1
        B, L = x_t.shape
        N = self.seqs.shape[0]
        seqs = self.seqs.unsqueeze(0).expand(B, N, L)  # (B, N, L)
        tt = t.reshape(B, 1).expand(B, N).reshape(-1)
        lm = self.process.marginal_log(seqs.reshape(B * N, L), tt).double()  # (B*N, L, S)
        lm = lm.reshape(B, N, L, -1)
        idx = x_t.unsqueeze(1).expand(B, N, L).unsqueeze(-1)
        lik = lm.gather(-1, idx).squeeze(-1).sum(-1)  # (B, N): log prod_i q(x_t_i | x0_i)
        logw = self.log_joint.unsqueeze(0) + lik  # (B, N)
        post = torch.softmax(logw, dim=1)  # (B, N)
        onehot = torch.nn.functional.one_hot(self.seqs, self.vocab).double()  # (N, L, V)
        cond_probs = torch.einsum("bn,nlv->blv", post, onehot)
        return torch.log(cond_probs.clamp_min(1e-300)).float()

    def nll(self, x0: Tensor) -> Tensor:
        """Exact -log p(x0) for sequences x0 (B, L)."""
        flat = torch.zeros(x0.shape[0], dtype=torch.long)
        for i in range(self.length):
            flat = flat * self.vocab + x0[:, i]
        return -self.log_joint[flat]
