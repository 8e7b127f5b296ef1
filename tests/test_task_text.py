"""Text task: chunks and masks, losses for the trainer, bpc evaluation, prefix/infill sampling,
SUNDAE from library parts, sample metrics. Tiny synthetic corpora, tiny models."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from discdiff.losses import corrupt, sample_times, sundae_loss
from discdiff.samplers import CachingSampler, make_sampler
from discdiff.tasks import runs
from discdiff.tasks.text import (
    CharNGram,
    TextChunks,
    TextDenoiser,
    TextTask,
    TextTaskConfig,
    encode_text,
    load_corpus,
    parse_infill,
    word_coverage,
    words,
)
from discdiff.tasks.text.evaluation import _ratio_se
from discdiff.tokenizers import BPETokenizer, CharTokenizer
from discdiff.training import TrainConfig

WORDS = "the king and queen of england went to war with france in spring lord lady castle".split()
SIZES = dict(num_layers=1, d_model=32, num_heads=2, cond_dim=16)


def make_corpus(path, lines: int = 300, seed: int = 0):
    rng = random.Random(seed)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(lines))
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("text") / "corpus.txt")


def new_task(corpus, **kw) -> TextTask:
    return TextTask.create(TextTaskConfig(corpus=str(corpus), seq_len=24, **kw))


def new_model(task: TextTask, ar: bool = False):
    torch.manual_seed(0)
    cfg = task.ar_model_config(**SIZES) if ar else task.model_config(**SIZES)
    return task.build_model({"type": "transformer", "config": cfg.to_dict()})


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """(task, model) of an absorbing model trained for a few dozen steps."""
    task = new_task(corpus)
    model = new_model(task)
    run = tmp_path_factory.mktemp("run")
    runs.train(task, model, TrainConfig(steps=40, batch_size=16, lr=3e-3), run, progress=False)
    return task, model.eval()


# ---- data -------------------------------------------------------------------------------------
def test_chunks_masks_and_chars():
    tok = CharTokenizer("abc ")
    text = "abc cab ba" * 3  # 30 characters
    data = TextChunks.from_text(text, tok, 8)
    assert data.ids.shape == (4, 8) and data.mask.shape == (4, 8)
    assert data.mask[:3].all() and data.mask[3].tolist() == [True] * 6 + [False] * 2
    assert data.chars.tolist() == [8, 8, 8, 6]
    assert tok.decode(data.ids[data.mask]) == text
    item = data[3]
    assert set(item) == {"ids", "mask", "chars"} and int(item["chars"]) == 6
    full = TextChunks.from_text(text, tok, 8, drop_partial=True)
    assert len(full) == 3 and full.mask.all()
    batches = list(data.batches(3))
    assert [len(b["ids"]) for b in batches] == [3, 1]
    assert [len(b["ids"]) for b in data.batches(3, limit=2)] == [2]


def test_encode_text_equals_the_tokenizer():
    tok = CharTokenizer("ab é\U0001f600")
    text = "ab é\U0001f600 ba" * 5
    assert encode_text(text, tok).tolist() == tok.encode(text)
    assert encode_text("", tok).tolist() == []
    unk = CharTokenizer("ab", unk="?")
    assert encode_text("abz", unk).tolist() == unk.encode("abz") == [0, 1, 2]
    with pytest.raises(ValueError, match="not in the tokenizer"):
        encode_text("abz", CharTokenizer("ab"))


def test_bpe_chunks_count_characters():
    text = "the king and the queen went to war. " * 40
    tok = BPETokenizer.train([text], 270)
    data = TextChunks.from_text(text, tok, 16)
    assert int(data.chars.sum()) == len(text)
    assert int(data.mask.sum()) == len(tok.encode(text)) < len(text)


def test_task_splits_tokenizer_and_roundtrip(corpus, tmp_path):
    task = new_task(corpus)
    whole = load_corpus(str(corpus), "all")
    assert task.tokenizer.vocab_size == len(set(whole)) + 1  # + the end-of-document mark
    train, test = task.chunks("train"), task.chunks("test")
    assert train.rows(0)["mask"].all()  # training keeps full windows only
    assert int(test.rows(0)["chars"].sum()) == len(load_corpus(str(corpus), "test"))
    task.save(tmp_path)
    back = TextTask.load(tmp_path)
    assert back.config == task.config
    assert back.tokenizer.encode("the king") == task.tokenizer.encode("the king")
    assert back.process.num_states == task.process.num_states == task.tokenizer.vocab_size + 1


def test_bad_config_and_corpus(tmp_path):
    with pytest.raises(ValueError, match="process="):
        TextTaskConfig(process="gaussian")
    with pytest.raises(ValueError, match="sundae"):
        TextTaskConfig(process="absorbing", objective="sundae")
    with pytest.raises(ValueError, match="seq_len"):
        TextTaskConfig(seq_len=0)
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        load_corpus(str(tmp_path / "missing.txt"))


# ---- losses ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "process,objective", [("absorbing", "elbo"), ("uniform", "elbo"), ("uniform", "sundae")]
)
def test_padding_is_never_scored(corpus, process, objective):
    task = new_task(corpus, process=process, objective=objective)
    model = new_model(task)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a non-uniform prediction
    data = task.chunks("test")
    batch = data.rows(-2)
    assert not batch["mask"].all()
    other = dict(batch, ids=torch.where(batch["mask"], batch["ids"], 3))
    for fn in (task.loss_fn, task.elbo_fn):
        a = fn(model, batch, torch.Generator().manual_seed(1))
        b = fn(model, other, torch.Generator().manual_seed(1))
        assert a.shape == (2,) and torch.isfinite(a).all()
        torch.testing.assert_close(a, b)


def test_training_lowers_the_elbo(corpus, trained):
    task, model = trained
    fresh = new_model(task)
    # common random numbers: the same generator seed draws the same times and masks
    before = task.evaluate(fresh, "val", generator=torch.Generator().manual_seed(5))
    after = task.evaluate(model, "val", generator=torch.Generator().manual_seed(5))
    assert after.bpc < before.bpc - 0.2


def test_sundae_from_parts_equals_sundae_loss(corpus):
    task = new_task(corpus, process="uniform", objective="sundae", unroll_steps=3)
    model = new_model(task)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    den = TextDenoiser(model, time_conditioned=True)
    data = task.chunks("test")
    x0, mask = data.rows(-4)["ids"], data.rows(-4)["mask"]
    B, K, k = x0.shape[0], task.process.num_classes, 3

    g = torch.Generator().manual_seed(7)
    t = sample_times(B, g).float()  # (B,)
    x_t = corrupt({"x": task.process}, {"x": x0}, t, {"x": mask}, g)["x"]
    total = torch.zeros(B)
    for _ in range(k):
        logits = den(x_t, t)  # (B, L, K)
        ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")  # (B, L)
        total = total + (ce * mask).sum(1)
        with torch.no_grad():
            draw = torch.multinomial(logits.softmax(-1).reshape(-1, K), 1, generator=g)
        x_t = torch.where(mask, draw.reshape(x0.shape), x0)
    parts = total / k

    lib = sundae_loss(
        task.process, den, x0, mask, unroll_steps=k, generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(parts, lib)
    # and the task's loss_fn is that loss (with the padding cond the denoiser gets)
    via_task = task.loss_fn(model, {"ids": x0, "mask": mask}, torch.Generator().manual_seed(7))
    assert via_task.shape == (B,) and torch.isfinite(via_task).all()


def test_ar_nll_is_teacher_forcing(corpus):
    task = new_task(corpus)
    model = new_model(task, ar=True)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    data = task.chunks("test")
    ids, mask = data.rows(-2)["ids"], data.rows(-2)["mask"]
    bos = task.tokenizer.vocab_size
    got = task.ar_nll(model, ids, mask, bos)
    inp = torch.cat([torch.full_like(ids[:, :1], bos), ids], 1)
    want = torch.zeros(2)
    for i in range(ids.shape[1]):  # brute force: one prefix at a time
        lp = torch.log_softmax(model(inp[:, : i + 1], None)[:, -1], -1)  # (B, K)
        want -= torch.where(mask[:, i], lp.gather(1, ids[:, i : i + 1]).squeeze(1), 0.0)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---- evaluation ------------------------------------------------------------------------------
def test_evaluate_bpc_and_standard_error(trained):
    task, model = trained
    res = task.evaluate(
        model, "test", batch_size=8, samples=2, generator=torch.Generator().manual_seed(0)
    )
    assert math.isfinite(res.bpc) and math.isfinite(res.bpc_se) and res.bpc_se > 0
    assert res.num_chars == int(task.chunks("test").rows(0)["chars"].sum()) and res.samples == 2
    # the aggregation by hand: same noise, nats summed over chunks / characters / ln 2
    g = torch.Generator().manual_seed(0)
    nats = []
    with torch.no_grad():
        for b in task.chunks("test").batches(8):
            nats.append(sum(task.elbo_fn(model, b, g).double() for _ in range(2)) / 2)
    nats = torch.cat(nats)
    assert res.bpc == pytest.approx(float(nats.sum()) / res.num_chars / math.log(2), rel=1e-6)
    assert "bits/char" in res.format()


def test_untrained_ar_scores_log_k_exactly(corpus):
    task = new_task(corpus)
    res = task.evaluate_ar(new_model(task, ar=True), "test")  # zero head: uniform over K
    test = task.chunks("test").rows(0)
    per_char = int(test["mask"].sum()) / int(test["chars"].sum())  # the end mark is no character
    assert per_char > 1
    log_k = math.log2(task.tokenizer.vocab_size)
    assert res.exact and res.bpc == pytest.approx(log_k * per_char, rel=1e-6)
    nats = test["mask"].sum(1).double() * math.log(task.tokenizer.vocab_size)  # (N,)
    se = _ratio_se(nats, test["chars"].double()) / math.log(2)
    assert res.bpc_se == pytest.approx(se, rel=1e-6)  # the spread is the end mark's window only


def test_ratio_standard_error_matches_formula():
    nats = torch.tensor([3.0, 5.0, 4.0, 8.0], dtype=torch.float64)
    equal = torch.full((4,), 2.0, dtype=torch.float64)
    assert _ratio_se(nats, equal) == pytest.approx(float(nats.std() / 2 / 2))
    assert math.isnan(_ratio_se(nats[:1], equal[:1]))


# ---- sampling --------------------------------------------------------------------------------
def test_parse_infill():
    tok = CharTokenizer("abc ")
    values, given = parse_infill("ab[MASK:3]c[MASK]", tok, 10)
    assert given.tolist() == [True, True, False, False, False, True, False, False, False, False]
    assert values[:2].tolist() == tok.encode("ab") and int(values[5]) == tok.encode("c")[0]
    with pytest.raises(ValueError, match="more than the sample length"):
        parse_infill("a[MASK:20]", tok, 10)
    with pytest.raises(ValueError, match="not in the tokenizer"):
        parse_infill("xyz[MASK]", tok, 10)


@pytest.mark.parametrize("name", ["ancestral", "caching", "first-hitting", "confidence"])
def test_prefix_is_kept_absorbing(trained, name):
    task, model = trained
    texts, ids, calls = task.sample(
        model,
        3,
        make_sampler(name, steps=12),
        prefix="the king ",
        generator=torch.Generator().manual_seed(0),
    )
    assert len(texts) == 3 and ids.shape == (3, 24) and calls >= 1
    assert all(t.startswith("the king ") and len(t) == 24 for t in texts)


@pytest.mark.parametrize("name", ["ancestral", "sundae"])
def test_prefix_and_infill_kept_uniform(corpus, name):
    task = new_task(corpus, process="uniform")
    model = new_model(task)
    gen = torch.Generator().manual_seed(0)
    texts, _, _ = task.sample(model, 2, make_sampler(name, steps=8), prefix="lord ", generator=gen)
    assert all(t.startswith("lord ") for t in texts)
    texts, _, _ = task.sample(
        model, 2, make_sampler(name, steps=8), infill="a [MASK:4] of", generator=gen
    )
    assert all(t[:2] == "a " and t[6:9] == " of" for t in texts)


def test_infill_keeps_given_text(trained):
    task, model = trained
    texts, _, _ = task.sample(
        model,
        4,
        make_sampler("caching", steps=16),
        infill="the [MASK:6] and [MASK:3] queen",
        length=24,
        generator=torch.Generator().manual_seed(1),
    )
    for t in texts:
        assert len(t) == 24
        assert t[:4] == "the " and t[10:15] == " and " and t[18:] == " queen"
    with pytest.raises(ValueError, match="either prefix or infill"):
        task.sample(model, 1, make_sampler("ancestral", steps=4), prefix="a", infill="b")


def test_time_free_denoiser_and_caching(corpus, trained):
    task, model = trained
    den = task.denoiser(model)
    x = task.chunks("test").rows(0, 2)["ids"]
    torch.testing.assert_close(den(x, torch.tensor([0.1, 0.2])), den(x, torch.tensor([0.9, 0.5])))
    timed = new_task(corpus, time_conditioning=True)
    with pytest.raises(ValueError, match="time_conditioned"):
        timed.sample(new_model(timed), 1, CachingSampler(4))


# ---- sample metrics --------------------------------------------------------------------------
def test_char_ngram_is_normalised_and_prefers_real_text():
    text = "the king and the queen of england went to war " * 20
    lm = CharNGram(text, n=3, k=0.5)
    alphabet = sorted(set(text))
    for ctx in ("th", "q ", "zz"):
        probs = [2 ** -lm.bits(ctx + c)[0] for c in alphabet]
        unseen = 2 ** -lm.bits(ctx + "#")[0]  # any character outside the alphabet
        assert sum(probs) + unseen == pytest.approx(1.0)
    shuffled = "".join(random.Random(0).sample(text[:200], 200))
    assert lm.bits_per_char([text[:200]]) < lm.bits_per_char([shuffled]) - 1.0
    with pytest.raises(ValueError, match="n="):
        CharNGram(text, n=0)


def test_word_coverage():
    assert words("The King's men, and 3 QUEENS!") == ["the", "king's", "men", "and", "queens"]
    vocab = {"the", "king", "and"}
    assert word_coverage(["x the king zz and y"], vocab) == pytest.approx(3 / 4)
    assert word_coverage(["x the king zz and y"], vocab, drop_edges=False) == pytest.approx(3 / 6)


# ---- scripts ---------------------------------------------------------------------------------
def test_benchmark_and_example_run_on_a_tiny_budget(corpus, tmp_path, capsys):
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tiny = ["--corpus", str(corpus), "--layers", "1", "--d-model", "32", "--heads", "2"]
    tiny += ["--seq-len", "24", "--batch-size", "8", "--threads", "1", "--minutes", "0.002"]
    bench = runpy.run_path(str(root / "benchmarks" / "text.py"))["main"]
    assert bench([*tiny, "--eval-samples", "1", "--out", str(tmp_path / "bench")]) == 0
    out = capsys.readouterr().out
    for name in ("absorbing", "uniform", "ar"):
        assert any(line.startswith(name) for line in out.splitlines())
    assert (tmp_path / "bench" / "results.json").is_file()
    assert bench([*tiny, "--steps", "3", "--models", "ar", "--out", str(tmp_path / "b2")]) == 0
    assert "budget: 3 steps training per model" in capsys.readouterr().out
    ood = tmp_path / "ood.txt"  # out-of-domain text of the same alphabet, and the bigram floor
    ood.write_text(" ".join(reversed(Path(corpus).read_text().split()))[:3000])
    assert bench([*tiny, "--steps", "2", "--models", "absorbing,ar", "--ood", str(ood),
                  "--bigram", "--out", str(tmp_path / "b3")]) == 0  # fmt: skip
    rows = {
        r["model"]: r for r in json.loads((tmp_path / "b3" / "results.json").read_text())["rows"]
    }
    assert set(rows) == {"absorbing", "ar", "bigram"}
    for r in rows.values():
        assert r["ood_bpc"] > 0 and r["bpc"] > 0 and r["bpc_se"] > 0
    assert "out-of-domain bpc" in capsys.readouterr().out
    example = runpy.run_path(str(root / "examples" / "sundae_vs_absorbing.py"))["main"]
    args = [*tiny, "--samples", "2", "--sample-steps", "4", "--ngram", "3"]
    assert example([*args, "--out", str(tmp_path / "ex")]) == 0
    out = capsys.readouterr().out
    assert "3-gram bits/char" in out and "sundae" in out and "test text" in out


def test_generative_perplexity_and_unigram_entropy_exactly(corpus):
    from discdiff.tasks.text.metrics import unigram_entropy

    task = new_task(corpus)
    judge = new_model(task, ar=True)  # zero head: uniform over K, so perplexity K exactly
    ids = torch.randint(
        task.tokenizer.vocab_size, (3, 50), generator=torch.Generator().manual_seed(0)
    )
    ppl, count = task.generative_perplexity(judge, ids)
    assert count == 150 and ppl == pytest.approx(task.tokenizer.vocab_size, rel=1e-5)
    assert unigram_entropy([[1, 1, 1, 1]]) == 0.0
    assert unigram_entropy([[0, 1, 2, 3], [5, 5, 6, 6]]) == pytest.approx(
        (math.log(4) + math.log(2)) / 2
    )
    with pytest.raises(ValueError, match="causal"):
        task.generative_perplexity(new_model(task), ids)
    samples = task.sample_ar(judge, 2, 12, prefix=task.tokenizer.encode("the"))
    assert samples.shape == (2, 12) and task.tokenizer.decode(samples[0]).startswith("the")


def test_sundae_starts_are_ranked_by_the_models_elbo_in_the_text_task(corpus):
    """The task ranks SUNDAE's argmax chains by its ELBO scorer (a likelihood bound), not by
    the model's own score; the caller's sampler keeps no scorer."""
    from discdiff.losses import continuous_elbo
    from discdiff.samplers import SundaeSampler

    task = new_task(corpus, process="uniform", objective="sundae")
    torch.manual_seed(0)
    model = new_model(task).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    B, n = 2, 4
    sampler = SundaeSampler(6, argmax=True, starts=n)
    _, ids, _ = task.sample(model, B, sampler, generator=torch.Generator().manual_seed(3))
    assert sampler.scorer is None
    _, chains, _ = task.sample(model, B * n, SundaeSampler(6, argmax=True),
                               generator=torch.Generator().manual_seed(3))  # fmt: skip
    score = task.elbo_scorer(model)(chains, None).reshape(B, n)
    assert torch.equal(ids, chains.reshape(B, n, -1)[torch.arange(B), score.argmax(1)])
    g = torch.Generator().manual_seed(0)
    den = task.denoiser(model)
    mask = torch.ones_like(chains, dtype=torch.bool)
    with torch.no_grad():
        want = -sum(continuous_elbo(task.process, den, chains, mask, generator=g,
                                    t_min=task.config.t_min) for _ in range(4)) / 4  # fmt: skip
    torch.testing.assert_close(task.elbo_scorer(model)(chains, None), want)
