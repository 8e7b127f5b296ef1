"""A Hugging Face masked LM as an absorbing denoiser (the optional ``transformers`` extra,
installed with the test extra, so this runs, and fails loudly without it, in CI): offline, on a
tiny BERT made at random and saved to a folder, as a published one would be loaded."""

from __future__ import annotations

import pytest
import torch

from discdiff.losses import continuous_elbo
from discdiff.nn import denoiser_config, denoiser_from_config
from discdiff.nn.hf import HFMaskedLM
from discdiff.processes import Absorbing
from discdiff.samplers import FirstHittingSampler
from discdiff.schedules import LogLinear

V, MASK = 20, 4


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)  # fmt: skip
    folder = tmp_path_factory.mktemp("bert")
    BertForMaskedLM(cfg).eval().save_pretrained(folder)
    return folder


def test_a_saved_masked_lm_samples_and_scores_as_an_absorbing_denoiser(bert_folder):
    """The target of the text bench: FirstHittingSampler draws from it, continuous_elbo scores
    it; the mask state feeds the model's [MASK]; x_0 never is the mask token; the run's record
    (denoiser_config) rebuilds the same function offline."""
    model = HFMaskedLM.from_pretrained(str(bert_folder), mask_token_id=MASK).eval()
    assert model.config.num_classes == V and model.config.num_states == V + 1
    process = Absorbing(V, LogLinear())
    assert process.num_states == model.config.num_states
    res = FirstHittingSampler().sample(
        model, process, (4, 12), generator=torch.Generator().manual_seed(0)
    )
    x = res.samples
    assert x.shape == (4, 12) and int(x.min()) >= 0 and int(x.max()) < V
    assert not bool((x == MASK).any())  # the mask token is never an x_0
    x0 = torch.randint(0, V, (4, 12), generator=torch.Generator().manual_seed(1))
    x0[x0 == MASK] = 0
    nats = continuous_elbo(process, model, x0, generator=torch.Generator().manual_seed(2))
    assert nats.shape == (4,) and bool(torch.isfinite(nats).all()) and bool((nats > 0).all())
    # the saved model predicts what HF's own forward predicts at a masked position
    from transformers import AutoModelForMaskedLM

    hf = AutoModelForMaskedLM.from_pretrained(str(bert_folder)).eval()
    x_t = x0.clone()
    x_t[:, 3] = V  # our mask state
    ids = x0.clone()
    ids[:, 3] = MASK
    with torch.no_grad():
        ours, theirs = model(x_t, torch.rand(4)), hf(input_ids=ids).logits
    keep = torch.arange(V) != MASK
    torch.testing.assert_close(ours[..., keep], theirs[..., keep])
    rebuilt = denoiser_from_config(denoiser_config(model)).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x_t, None), ours)


def test_a_model_without_a_mask_token_is_one_line(bert_folder):
    with pytest.raises(ValueError, match="names no mask token"):
        HFMaskedLM.from_pretrained(str(bert_folder))
    with pytest.raises(ValueError, match="mask_token_id must be an id"):
        HFMaskedLM.from_pretrained(str(bert_folder), mask_token_id=V)
