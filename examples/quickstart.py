"""The core API in one page: a process, a denoiser, a loss, a training step and a sampler."""

import torch

import discdiff as dd

g = torch.Generator().manual_seed(0)
K, L = 27, 32  # e.g. a-z and space, 32 characters

# Forward process: absorbing (mask) noise with MDLM's log-linear schedule. Uniform, Marginal
# (DiGress) and Dense (any step matrices) share the same interface.
proc = dd.Absorbing(num_classes=K, schedule=dd.LogLinear())

# Any callable (x_t, t) -> logits over x_0 is a denoiser; here the shared transformer.
model = dd.TransformerDenoiser(
    dd.TransformerConfig(
        num_states=proc.num_states, num_classes=K, num_layers=2, d_model=64, num_heads=4, max_len=L
    )
)

x0 = torch.randint(0, K, (8, L), generator=g)  # a batch of clean sequences
nats = dd.continuous_elbo(proc, model, x0, generator=g)  # (8,) negative ELBO per sequence
print("bits per token:", dd.bits_per_token(nats, L).mean().item())

opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
nats.mean().backward()
opt.step()

# Exact-order sampling: at most L denoiser calls.
model.eval()
with torch.no_grad():
    out = dd.FirstHittingSampler().sample(model, proc, (4, L), generator=g)
print(out.samples.shape, "denoiser calls:", out.num_calls)

# The exact posterior q(x_s | x_t, x_0) for any s < t, and the model's reverse step from logits.
x_t = proc.sample_marginal(x0, torch.full((8,), 0.7), generator=g)
exact = proc.posterior(x_t, x0, 0.3, 0.7)  # (8, L, K + 1)
model_step = proc.posterior(x_t, model(x_t, torch.full((8,), 0.7)), 0.3, 0.7)
print(exact.shape, model_step.shape)
