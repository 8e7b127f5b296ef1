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


CONFIG_CODE = """
from transformers import PretrainedConfig


class TinyDiffConfig(PretrainedConfig):
    model_type = "tinydiff"

    def __init__(self, vocab_size=13, hidden=16, time_conditioning=True, **kwargs):
        self.vocab_size = vocab_size
        self.hidden = hidden
        self.time_conditioning = time_conditioning
        super().__init__(**kwargs)
"""

MODEL_CODE = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_tinydiff import TinyDiffConfig


class TinyDiff(PreTrainedModel):
    """MDLM's published shape: forward(input_ids, timesteps), the mask the last id."""

    config_class = TinyDiffConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.time = nn.Linear(1, config.hidden)
        self.mix = nn.Linear(config.hidden, config.hidden)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.5)

    def forward(self, input_ids, timesteps=None, return_dict=True):
        h = self.embed(input_ids)
        h = h + h.mean(1, keepdim=True)
        if self.config.time_conditioning:
            h = h + self.time(timesteps[:, None].float())[:, None]
        return MaskedLMOutput(logits=self.head(torch.tanh(self.mix(h))))
'''


@pytest.fixture(scope="module", params=[True, False], ids=["timed", "time-free"])
def custom_folder(request, tmp_path_factory):
    """A checkpoint with its own code (as MDLM publishes: trust_remote_code), saved offline."""
    import importlib
    import sys

    src = tmp_path_factory.mktemp("src")
    pkg = src / f"tinydiff_{'timed' if request.param else 'free'}"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "configuration_tinydiff.py").write_text(CONFIG_CODE)
    (pkg / "modeling_tinydiff.py").write_text(MODEL_CODE)
    sys.path.insert(0, str(src))
    try:
        mod = importlib.import_module(f"{pkg.name}.modeling_tinydiff")
        conf = importlib.import_module(f"{pkg.name}.configuration_tinydiff")
        conf.TinyDiffConfig.register_for_auto_class()
        mod.TinyDiff.register_for_auto_class("AutoModelForMaskedLM")
        torch.manual_seed(0)
        model = mod.TinyDiff(conf.TinyDiffConfig(time_conditioning=request.param)).eval()
        folder = tmp_path_factory.mktemp("tinydiff")
        model.save_pretrained(folder)
    finally:
        sys.path.remove(str(src))
    return folder, request.param


def test_a_diffusion_checkpoint_with_its_own_code_and_an_appended_mask(custom_folder):
    """MDLM-style: the model takes ``timesteps`` and its mask is the last of V ids, so x_0 has
    V - 1 classes (GPT-2's vocabulary for MDLM); it samples, scores, predicts what its own
    forward predicts, says whether it is told t, and a run's record rebuilds it from its
    source."""
    folder, timed = custom_folder
    model = HFMaskedLM.from_pretrained(str(folder), mask_appended=True, trust_remote_code=True)
    model.eval()
    K = 12  # 13 ids, the last the mask
    assert model.config.num_classes == K and model.config.mask_token_id == K
    assert model.time_conditioned is timed
    process = Absorbing(K, LogLinear())
    res = FirstHittingSampler().sample(model, process, (3, 10),
                                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert int(res.samples.max()) < K
    x0 = torch.randint(0, K, (3, 10), generator=torch.Generator().manual_seed(1))
    nats = continuous_elbo(process, model, x0, generator=torch.Generator().manual_seed(2))
    assert bool(torch.isfinite(nats).all())
    x_t = x0.clone()
    x_t[:, 2] = K
    t = torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad():
        ours = model(x_t, t)
        theirs = model.model(input_ids=x_t, timesteps=t).logits[..., :K]
    torch.testing.assert_close(ours, theirs)
    rebuilt = denoiser_from_config(denoiser_config(model)).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x_t, t), ours)
    with pytest.raises(ValueError, match="mask_appended"):
        HFMaskedLM.from_pretrained(str(folder), mask_appended=True, mask_token_id=3,
                                   trust_remote_code=True)  # fmt: skip


def test_a_published_masked_lm_fine_tunes_from_the_command_line(tmp_path, capsys):
    """DiffusionBERT-style: a text task on the model's own tokenizer trains the published
    weights (not a fresh model) as its absorbing denoiser, and the run samples and scores."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForMaskedLM

    from discdiff.cli.main import main
    from discdiff.tasks.text import TextTask, TextTaskConfig

    words = "the king and queen of england went to war with france in spring".split()
    vocab = ["[PAD]", "[UNK]", "[SEP]", "[MASK]", *sorted(set(words))]
    folder = tmp_path / "bert"
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["[PAD]", "[UNK]", "[SEP]", "[MASK]"])
    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32,
                                      max_position_embeddings=32))  # fmt: skip
    bert.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    corpus = tmp_path / "c.txt"
    rng = __import__("random").Random(0)
    corpus.write_text(
        "\n\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(80))
    )
    config = {"corpus": str(corpus), "tokenizer": str(folder), "seq_len": 16}
    sizes = {"pretrained": str(folder), "mask_token_id": 3}
    task = TextTask.create(TextTaskConfig(**config))
    model = task.new_model("hf-masked-lm", **sizes)
    for name, p in bert.state_dict().items():  # the published weights, not a fresh model
        torch.testing.assert_close(model.model.state_dict()[name], p)
    assert model.config.load_weights is False  # a saved run rebuilds from its config
    with pytest.raises(ValueError, match="prepare the corpus with the model's tokenizer"):
        TextTask.create(TextTaskConfig(corpus=str(corpus), seq_len=16)).new_model(
            "hf-masked-lm", **sizes
        )
    run = tmp_path / "run"
    args = ["task", "train", "text", "--out", str(run), "--config", json.dumps(config),
            "--denoiser", "hf-masked-lm", "--sizes", json.dumps(sizes), "--steps", "2",
            "--batch-size", "4", "--eval-every", "0", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["text", "sample", str(run), "-n", "2", "--steps", "4", "--stop-at-eod"]) == 0
    assert capsys.readouterr().out.count("=== sample") == 2
    assert main(["text", "eval", str(run), "--no-progress"]) == 0
    assert "bits/char" in capsys.readouterr().out
