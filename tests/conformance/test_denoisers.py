"""Every registered denoiser passes the same contract (a newcomer's too: register it, give it a
``conformance_example(generator) -> (config, x_t, t, cond)`` classmethod, and it is tested).

Logits per field with the input's leading shape, finite at t = 0, 1/2 and 1; the same input
gives the same output; a config round trip (``denoiser_config`` / ``denoiser_from_config``)
and a state-dict round trip give the same function; each example's logits do not depend on
the others in its batch; every parameter receives a gradient (an unused one trips DDP)."""

from __future__ import annotations

import pytest
import torch

from discdiff.nn import DENOISERS, denoiser_config, denoiser_from_config


def _fields(out):
    return out if isinstance(out, dict) else {"x": out}


def _rows(x, idx):
    if isinstance(x, dict):
        return {k: _rows(v, idx) for k, v in x.items()}
    return None if x is None else x[idx]


def _example(name):
    model_cls, _ = DENOISERS.get(name)
    make = getattr(model_cls, "conformance_example", None)
    assert callable(make), (
        f"denoiser {name!r} ({model_cls.__name__}) has no conformance_example classmethod: a "
        "registered denoiser must say how to run it (config, x_t, t, cond)"
    )
    cfg, x_t, t, cond = make(torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    return model_cls(cfg).eval(), x_t, t, cond


@pytest.mark.parametrize("name", DENOISERS.names())
def test_denoiser_contract(name, tmp_path):
    model, x_t, t, cond = _example(name)
    inputs = _fields(x_t)
    with torch.no_grad():
        for time in (torch.zeros_like(t), torch.full_like(t, 0.5), torch.ones_like(t)):
            out = _fields(model(x_t, time, cond))
            assert out.keys() == inputs.keys(), (name, sorted(out), sorted(inputs))
            for k, v in out.items():
                assert v.shape[: inputs[k].dim()] == inputs[k].shape, (name, k, v.shape)
                assert v.dtype.is_floating_point and bool(torch.isfinite(v).all()), (name, k)
        first = _fields(model(x_t, t, cond))
        again = _fields(model(x_t, t, cond))
        for k in first:
            assert torch.equal(first[k], again[k]), (name, k)
        rebuilt = denoiser_from_config(denoiser_config(model)).eval()
        rebuilt.load_state_dict(model.state_dict())
        torch.save(model.state_dict(), tmp_path / "w.pt")
        reloaded = denoiser_from_config(denoiser_config(model)).eval()
        reloaded.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
        for other in (rebuilt, reloaded):
            out = _fields(other(x_t, t, cond))
            for k in first:
                assert torch.equal(out[k], first[k]), (name, k)
        one = _fields(model(_rows(x_t, slice(1, 2)), t[1:2], _rows(cond, slice(1, 2))))
        for k in first:
            torch.testing.assert_close(one[k], first[k][1:2], rtol=1e-4, atol=1e-5)
    model.train()
    total = sum(v.float().sum() for v in _fields(model(x_t, t, cond)).values())
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, (name, missing[:5])
