"""Semi-autoregressive generation: sequences longer than the model's context, block by block.

MDLM's semi-AR decoding: the first ``window`` positions are sampled as usual; then the window
slides by ``block`` positions: its first ``window - block`` positions are the end of what was
generated so far, given to the sampler as fixed, and the last ``block`` are sampled anew. Any
sampler that honours ``fixed=`` positions serves. With ``eos_id`` a row that has produced the
end-of-sequence token stops growing: everything after its first EOS is set to EOS (so the
output has a variable length), and generation ends once every row has one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from discdiff.processes.base import Process
from discdiff.samplers.base import Sampler, SampleResult

__all__ = ["sample_blocks"]


def sample_blocks(
    sampler: Sampler,
    denoiser: Any,
    process: Process,
    batch: int,
    length: int,
    window: int,
    block: int | None = None,
    *,
    fixed: tuple[Tensor, Tensor] | None = None,
    cond: Any = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> SampleResult:
    """``batch`` sequences of ``length`` ids from a model whose context is ``window`` ids,
    (batch, length) in the result; ``block`` new positions per window after the first
    (default window // 2). ``fixed`` (values, mask) of shape (batch, window) holds given
    positions of the first window (a prompt). ``progress``: one bar over the tokens made
    (a single window: the sampler's own bar over its steps)."""
    for name, v in (("batch", batch), ("length", length), ("window", window)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}: expected an int >= 1")
    block = window // 2 if block is None else block
    if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= window:
        raise ValueError(f"block={block!r}: expected an int in [1, window={window}]")
    first = min(window, length)
    if fixed is not None:
        fixed = (fixed[0][:, :first], fixed[1][:, :first])
    bar = None
    if progress and length > window:
        from tqdm.auto import tqdm

        bar = tqdm(total=length, desc="sampling", unit="token", disable=None)
    res = sampler.sample(
        denoiser, process, (batch, first), cond=cond, fixed=fixed, generator=generator,
        device=device, progress=progress and bar is None,
    )  # fmt: skip
    out = [res.samples]
    calls, rows = res.num_calls, res.rows_evaluated
    done = _ended(res.samples, eos_id)
    made = first
    keep = window - block  # the context carried into the next window
    ctx = res.samples[:, res.samples.shape[1] - keep :] if keep > 0 else res.samples[:, :0]
    if bar is not None:
        bar.update(first)
    while made < length and not bool(done.all()):
        new = min(block, length - made)
        span = ctx.shape[1] + new
        values = torch.cat([ctx, torch.zeros(batch, new, dtype=ctx.dtype, device=ctx.device)], 1)
        mask = torch.arange(span, device=ctx.device).expand(batch, span) < ctx.shape[1]
        res = sampler.sample(
            denoiser, process, (batch, span), cond=cond, fixed=(values, mask),
            generator=generator, device=device, progress=False,
        )  # fmt: skip
        piece = res.samples[:, ctx.shape[1] :]
        out.append(piece)
        if keep > 0:  # the last ``keep`` ids (a running tail: no re-joining of every piece)
            ctx = torch.cat([ctx, piece], 1)[:, -keep:]
        if bar is not None:
            bar.update(new)
        calls, rows = calls + res.num_calls, rows + res.rows_evaluated
        done = done | _ended(piece, eos_id)
        made += new
    if bar is not None:
        bar.close()
    ids = torch.cat(out, 1)
    if made < length:  # every row ended: pad with EOS
        pad = torch.full((batch, length - made), int(eos_id), dtype=ids.dtype, device=ids.device)
        ids = torch.cat([ids, pad], 1)
    if eos_id is not None:
        after = (ids == eos_id).long().cumsum(1) > 0
        ids = torch.where(after, torch.full_like(ids, eos_id), ids)
    return SampleResult(samples=ids, num_calls=calls, rows_evaluated=rows)


def _ended(x: Tensor, eos_id: int | None) -> Tensor:
    if eos_id is None:
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    return (x == eos_id).any(1)
