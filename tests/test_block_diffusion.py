"""Block diffusion (BD3-LM): the 2L training forward, the key/value cache that samples block by
block, the bound at its exact ends, and the text task's and CLI's use of it."""

from __future__ import annotations

import math

import pytest
import torch

import discdiff as dd
from discdiff.nn.transformer import TransformerConfig, TransformerDenoiser

K = 10  # classes; the mask is K


def block_model(block: int, max_len: int = 20, layers: int = 2, seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = TransformerConfig(num_states=K + 1, num_classes=K, num_layers=layers, d_model=32,
                            num_heads=4, cond_dim=16, max_len=max_len, block_size=block,
                            time_conditioning=False, **kw)  # fmt: skip
    model = TransformerDenoiser(cfg)
    for p in model.parameters():  # adaLN-Zero starts as the identity: give every path a say
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def noisy(x0: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(x0.shape, generator=g) < share, torch.full_like(x0, K), x0)


def test_the_cache_gives_the_training_forwards_logits_block_by_block():
    model = block_model(5)
    x0 = torch.randint(0, K, (3, 18), generator=torch.Generator().manual_seed(1))
    x_t = noisy(x0, 0.5, 2)
    full = model(x_t, None, {"x0": x0})  # (3, 18, K)
    cache = model.empty_cache(3)
    for start in range(0, 18, 5):  # the last block is short (3 positions)
        n = min(5, 18 - start)
        assert cache["start"] == start and cache["k"].shape[3] == start
        step = model(x_t[:, start : start + n], None, {"kv": cache})
        torch.testing.assert_close(step, full[:, start : start + n], atol=2e-5, rtol=1e-5)
        cache = model.extend_cache(x0[:, start : start + n], cache)


def test_a_block_sees_its_noisy_self_and_the_clean_blocks_before_it_only():
    model = block_model(4)
    x0 = torch.randint(0, K, (2, 16), generator=torch.Generator().manual_seed(3))
    x_t = noisy(x0, 0.5, 4)
    base = model(x_t, None, {"x0": x0})
    later = x0.clone()
    later[:, 8:] = (later[:, 8:] + 1) % K  # change the clean blocks 2 and 3
    moved = model(x_t, None, {"x0": later})
    assert torch.equal(moved[:, :12], base[:, :12])  # blocks 0-2 never see clean block >= 2
    assert not torch.allclose(moved[:, 12:], base[:, 12:])  # block 3 sees clean block 2
    other = x_t.clone()
    other[:, 4:8] = noisy(x0, 0.9, 5)[:, 4:8]  # change noisy block 1 only
    moved = model(other, None, {"x0": x0})
    assert torch.equal(moved[:, :4], base[:, :4]) and torch.equal(moved[:, 8:], base[:, 8:])


def test_one_block_is_the_ordinary_model_and_a_block_model_needs_its_context():
    model = block_model(12, max_len=12)
    plain = TransformerDenoiser(dataclass_replace(model.config, block_size=0)).eval()
    plain.load_state_dict(model.state_dict())
    x0 = torch.randint(0, K, (2, 12), generator=torch.Generator().manual_seed(6))
    x_t = noisy(x0, 0.6, 7)
    torch.testing.assert_close(model(x_t, None, {"x0": x0}), plain(x_t, None), atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="clean ids cond\\['x0'\\]"):
        model(x_t, None)
    with pytest.raises(ValueError, match="block-diffusion models"):
        plain(x_t, None, {"x0": x0})
    with pytest.raises(ValueError, match="time_conditioning=False"):
        TransformerConfig(num_states=3, num_classes=2, block_size=2, max_len=8)
    with pytest.raises(ValueError, match="exceeds max_len"):
        TransformerConfig(num_states=3, num_classes=2, block_size=9, max_len=8,
                          time_conditioning=False)  # fmt: skip


def dataclass_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_past_the_context_a_cache_of_the_last_blocks_gives_the_window_forwards_logits():
    """Beyond max_len a block sees the whole blocks of the last max_len - S positions, their
    cache built anew (the clean blocks' mask in one pass); rotary attention depends on offsets
    only, so the block's logits equal the training forward over that window alone. Built
    block by block from position 0 the cache would give the same logits for a window that
    starts at 0."""
    model = block_model(5, max_len=15)
    x0 = torch.randint(0, K, (2, 35), generator=torch.Generator().manual_seed(8))
    x_t = noisy(x0, 0.5, 9)
    cache = model.context_cache(x0[:, 20:30], 20)
    assert cache["start"] == 30 and cache["k"].shape[3] == 10
    step = model(x_t[:, 30:35], None, {"kv": cache})
    window = model(x_t[:, 20:35], None, {"x0": x0[:, 20:35]})[:, 10:]
    torch.testing.assert_close(step, window, atol=3e-5, rtol=1e-5)
    built = model.empty_cache(2)
    for start in (0, 5):
        built = model.extend_cache(x0[:, start : start + 5], built)
    whole = model.context_cache(x0[:, :10])
    torch.testing.assert_close(whole["k"], built["k"], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(whole["v"], built["v"], atol=2e-5, rtol=1e-5)


def reference_blocks(sampler, model, proc, batch, length, generator):
    """The block sampler without a cache: each block drawn with the 2L forward over the
    blocks so far (the meaning the cache must keep)."""
    S = model.config.block_size
    done = torch.zeros(batch, 0, dtype=torch.long)
    for start in range(0, length, S):
        n = min(S, length - start)

        def den(x_t, t, cond):  # cond carries the blocks so far (the caching sampler's rows)
            ids = torch.cat([cond["done"], x_t], 1)
            clean = torch.cat([cond["done"], torch.zeros_like(x_t)], 1)
            return model(ids, None, {"x0": clean})[:, -x_t.shape[1] :]

        piece = sampler.sample(den, proc, (batch, n), cond={"done": done}, generator=generator)
        piece = piece.samples
        done = torch.cat([done, piece], 1)
    return done


@pytest.mark.parametrize("name", ["first-hitting", "ancestral", "caching"])
def test_the_block_sampler_draws_what_the_uncached_reference_draws(name):
    model = block_model(4, max_len=16)
    proc = dd.Absorbing(K, dd.LogLinear())
    sampler = dd.make_sampler(name, steps=6)
    got = dd.sample_block_diffusion(sampler, model, proc, 5, 14,
                                    generator=torch.Generator().manual_seed(11))  # fmt: skip
    want = reference_blocks(sampler, model, proc, 5, 14, torch.Generator().manual_seed(11))
    assert got.samples.shape == (5, 14)
    assert torch.equal(got.samples, want)
    assert got.num_calls >= 4  # the sampler's calls and one pass per finished block


def test_a_prompt_and_an_end_token_in_the_block_sampler():
    model = block_model(4, max_len=16)
    proc = dd.Absorbing(K, dd.LogLinear())
    values = torch.zeros(3, 6, dtype=torch.long)
    values[:, :6] = torch.tensor([1, 2, 3, 4, 5, 6])
    given = torch.ones(3, 6, dtype=torch.bool)
    res = dd.sample_block_diffusion(dd.FirstHittingSampler(), model, proc, 3, 30,
                                    fixed=(values, given), eos_id=0,
                                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(res.samples[:, :6], values)
    after = (res.samples == 0).long().cumsum(1) > 0
    assert bool((res.samples[after] == 0).all())  # everything after a row's first 0 is 0
    with pytest.raises(ValueError, match="block_size > 0"):
        dd.sample_block_diffusion(dd.FirstHittingSampler(), lambda *a: None, proc, 1, 4)
    with pytest.raises(ValueError, match="second cache"):
        dd.sample_block_diffusion(dd.FirstHittingSampler(guidance=2.0, null_label=0), model,
                                  proc, 1, 4)  # fmt: skip


def test_with_blocks_of_one_the_bound_is_the_exact_autoregressive_likelihood():
    """Blocks of one token make the model autoregressive: p(x) = prod_i p(x_i | x_<i), each
    factor the model's prediction at a masked position after the clean prefix. The
    continuous ELBO of a time-free model then has no variance left but whether a position is
    masked, and its mean is that exact NLL (up to the t_min end): a Monte-Carlo estimate within
    four standard errors of the brute-force sum."""
    model = block_model(1, max_len=8)
    proc = dd.Absorbing(K, dd.LogLinear())
    x0 = torch.randint(0, K, (1, 8), generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        exact = 0.0
        for i in range(8):
            x_t = x0.clone()
            x_t[0, i] = K
            logp = model(x_t, None, {"x0": x0}).log_softmax(-1)[0, i, x0[0, i]]
            exact -= float(logp)
        draws = []
        g = torch.Generator().manual_seed(13)
        for _ in range(50):
            batch = x0.expand(512, 8)
            nelbo = dd.continuous_elbo(proc, lambda x, t, c: model(x, None, c), batch,
                                       cond={"x0": batch}, generator=g, t_min=1e-4)  # fmt: skip
            draws.append(nelbo)
        draws = torch.cat(draws).double()
    mean, se = float(draws.mean()), float(draws.std() / math.sqrt(draws.numel()))
    assert abs(mean - exact) < 4 * se + 1e-3 * exact, (mean, exact, se)


from tests.test_cli_text import FAST, TINY  # noqa: E402


def test_the_cli_trains_resumes_samples_and_scores_a_block_model(tiny_text, tmp_path, capsys):
    import json

    from discdiff.cli.main import main

    run = tmp_path / "bd3"
    train = ["text", "train", str(tiny_text), "--out", str(run), *TINY, *FAST]
    assert main([*train, "--steps", "2", "--block-size", "8"]) == 0
    assert json.loads((run / "task.json").read_text())["block_size"] == 8
    assert main([*train, "--steps", "3", "--resume", "--block-size", "4"]) == 2
    assert "--block-size 4 differs" in capsys.readouterr().err
    assert main([*train, "--steps", "3", "--resume"]) == 0
    capsys.readouterr()
    args = ["text", "sample", str(run), "-n", "2", "--steps", "4"]
    assert main([*args, "--length", "60", "--prefix", "the king"]) == 0  # past seq_len
    texts = [
        b.split("\n", 1)[1].rstrip("\n") for b in capsys.readouterr().out.split("=== sample")[1:]
    ]
    assert len(texts) == 2 and all(t.startswith("the king") and len(t) == 60 for t in texts)
    for sampler in ("caching", "first-hitting"):
        assert main([*args, "--sampler", sampler, "--stop-at-eod"]) == 0
        assert capsys.readouterr().out.count("=== sample") == 2
    assert main(["text", "eval", str(run), "--no-progress"]) == 0
    assert "bits/char" in capsys.readouterr().out
    for extra, message in (
        (["--infill", "the [MASK:5] and"], "left to right"),
        (["--length", "60", "--block", "6"], "draws its own blocks"),
    ):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--block-size", "8", "--time-conditioning"], "--no-time-conditioning"),
        (["--block-size", "8", "--autoregressive"], "does not apply"),
        (["--block-size", "8", "--self-conditioning"], "self-conditioning"),
        (["--block-size", "30"], "block_size=30"),
        (["--block-size", "8", "--process", "uniform"], "--no-time-conditioning"),
    ],
)
def test_block_options_that_cannot_work_are_refused_in_one_line(
    tiny_text, tmp_path, capsys, extra, message
):
    from discdiff.cli.main import main

    code = main(["text", "train", str(tiny_text), "--out", str(tmp_path / "r"), *TINY, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err, err


def test_a_block_models_training_flops_count_both_halves():
    from discdiff.nn import flops_per_token

    cfg = TransformerConfig(num_states=29, num_classes=28, max_len=64, time_conditioning=False)
    bd3 = dataclass_replace(cfg, block_size=16)
    twice = dataclass_replace(cfg, max_len=128)
    assert flops_per_token(bd3, 64) == 2 * flops_per_token(twice, 128)
    assert flops_per_token(bd3, 64) > 2 * flops_per_token(cfg, 64)  # attention over 2L keys
