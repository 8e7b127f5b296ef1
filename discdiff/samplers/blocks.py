"""Semi-autoregressive generation: sequences longer than the model's context, block by block.

MDLM's semi-AR decoding: the first ``window`` positions are sampled as usual; then the window
slides by ``block`` positions: its first ``window - block`` positions are the end of what was
generated so far, given to the sampler as fixed, and the last ``block`` are sampled anew. Any
sampler that honours ``fixed=`` positions serves. With ``eos_id`` a row that has produced the
end-of-sequence token stops growing: everything after its first EOS is set to EOS (so the
output has a variable length), and generation ends once every row has one.

:func:`sample_block_diffusion` generates from a block-diffusion model (BD3-LM,
``TransformerConfig.block_size``): block after block, each drawn by any sampler over its own
positions only, attending to the keys and values of the finished blocks, which are computed
once per block and kept (a KV cache), so a step costs one block's positions, not a window's.
Past the model's context a block sees the whole blocks of the last ``max_len - block_size``
positions: their cache is rebuilt from those ids (a later block's keys have seen the earlier
ones, so dropping the oldest keys would not be what the model was trained on). (An
ordinary bidirectional model cannot reuse keys this way: its earlier positions attend to the
new ones, so their keys change with every step.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from discdiff.processes.base import Process
from discdiff.samplers.base import Sampler, SampleResult

__all__ = ["sample_block_diffusion", "sample_blocks"]


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
    return _joined(out, made, length, eos_id, calls, rows)


def sample_block_diffusion(
    sampler: Sampler,
    model: Any,
    process: Process,
    batch: int,
    length: int,
    *,
    wrap: Callable[[Any], Any] | None = None,
    fixed: tuple[Tensor, Tensor] | None = None,
    label: Tensor | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> SampleResult:
    """``batch`` sequences of ``length`` ids (batch, length) from a block-diffusion ``model``
    (a :class:`~discdiff.nn.TransformerDenoiser` with ``block_size``), block by block with a
    key/value cache. ``sampler`` draws each block (any sampler honouring ``fixed``); ``wrap``
    turns the model into the denoiser the sampler calls (e.g. the task's view of it);
    ``fixed`` (values, mask) of shape (batch, P) holds given positions from the start (a
    prompt; P <= length); ``label`` (batch,) conditions a labelled model; ``eos_id`` as in
    :func:`sample_blocks`. ``num_calls`` counts the sampler's calls and one pass per finished
    block."""
    cfg = getattr(model, "config", None)
    S = getattr(cfg, "block_size", 0)
    if not S:
        raise ValueError("sample_block_diffusion needs a block-diffusion model (block_size > 0)")
    for name, v in (("batch", batch), ("length", length)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}: expected an int >= 1")
    if getattr(sampler, "guidance", 1.0) != 1.0:
        raise ValueError(
            "guidance with a block-diffusion model would need a second cache (the unconditional "
            "one); sample with guidance 1"
        )
    if fixed is not None and fixed[0].shape[1] > length:
        raise ValueError(f"the given positions ({fixed[0].shape[1]}) exceed the length {length}")
    den = model if wrap is None else wrap(model)
    p = next(model.parameters())
    device = p.device if device is None else torch.device(device)
    window = (cfg.max_len - S) // S * S  # whole blocks before a block: max_len in all
    cache = model.empty_cache(batch, device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=length, desc="sampling", unit="token", disable=None)
    out: list[Tensor] = []
    calls = rows = made = 0
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    was = model.training
    model.eval()
    try:
        while made < length and not (eos_id is not None and bool(done.all())):
            n = min(S, length - made)
            given = _block_of(fixed, made, n, batch, device)
            if given is not None and bool(given[1].all()):
                piece = given[0]  # a block the prompt gives whole: nothing to draw
            else:
                cond: dict[str, Any] = {"kv": cache}
                if label is not None:
                    cond["label"] = label
                res = sampler.sample(
                    den, process, (batch, n), cond=cond, fixed=given, generator=generator,
                    device=device,
                )  # fmt: skip
                piece = res.samples
                calls, rows = calls + res.num_calls, rows + res.rows_evaluated
            out.append(piece)
            made += n
            done = done | _ended(piece, eos_id)
            if made < length and not (eos_id is not None and bool(done.all())):
                if cache["k"].shape[3] + n <= window:
                    cache = model.extend_cache(piece, cache, label=label)
                else:  # past the context: the last ``window`` ids, their cache anew
                    ctx = torch.cat(out, 1)[:, made - window :] if window else piece[:, :0]
                    cache = model.context_cache(ctx, made - window, label=label)
                calls, rows = calls + 1, rows + batch
            if bar is not None:
                bar.update(n)
    finally:
        model.train(was)
        if bar is not None:
            bar.close()
    return _joined(out, made, length, eos_id, calls, rows)


def _joined(
    out: list[Tensor], made: int, length: int, eos_id: int | None, calls: int, rows: int
) -> SampleResult:
    """The pieces as (batch, length) ids: padded with EOS where every row ended early, and
    everything after a row's first EOS set to EOS."""
    ids = torch.cat(out, 1)
    if made < length:  # every row ended: pad with EOS
        pad = torch.full((ids.shape[0], length - made), int(eos_id), dtype=ids.dtype,
                         device=ids.device)  # fmt: skip
        ids = torch.cat([ids, pad], 1)
    if eos_id is not None:
        after = (ids == eos_id).long().cumsum(1) > 0
        ids = torch.where(after, torch.full_like(ids, eos_id), ids)
    return SampleResult(samples=ids, num_calls=calls, rows_evaluated=rows)


def _block_of(
    fixed: tuple[Tensor, Tensor] | None, start: int, n: int, batch: int, device: torch.device
) -> tuple[Tensor, Tensor] | None:
    """The given positions of block [start, start + n), or None where nothing is given."""
    if fixed is None or start >= fixed[0].shape[1]:
        return None
    values = torch.zeros(batch, n, dtype=torch.long, device=device)
    mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
    end = min(start + n, fixed[0].shape[1])
    values[:, : end - start] = fixed[0][:, start:end].to(device)
    mask[:, : end - start] = fixed[1][:, start:end].to(device)
    return (values, mask) if bool(mask.any()) else None


def _ended(x: Tensor, eos_id: int | None) -> Tensor:
    if eos_id is None:
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    return (x == eos_id).any(1)
