import pytest
import torch

from difflm.config import Config, DiffusionConfig, ModelConfig
from difflm.diffusion import process
from difflm.diffusion.schedules import make_schedule
from difflm.model.denoiser import Denoiser
from difflm.model.embedding import WordEmbedding
from difflm.objectives import Batch
from difflm.objectives.diffusion import e2e_loss

V, L, D = 11, 7, 8


def make(predict="x0", **kw) -> Denoiser:
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=D, hidden=32, layers=1, heads=4, dropout=0.0, predict=predict, **kw)
    return Denoiser(cfg, V, L, make_schedule("sqrt", 100)).eval()


@pytest.mark.parametrize("predict", ["x0", "eps", "v", "logits"])
def test_prediction_shapes(predict):
    model = make(predict, self_condition=True)
    x = torch.randn(3, L, D)
    pred = model(x, torch.rand(3), self_cond=torch.randn(3, L, D))
    assert pred.x0.shape == (3, L, D) and pred.logits.shape == (3, L, V)


def test_eps_output_is_read_through_process():
    model = make("eps")
    x, t = torch.randn(2, L, D), torch.tensor([0.3, 0.8])
    pred = model(x, t)
    # Reading x̂0 back into the ε view recovers what the network output.
    abar = model.schedule.alpha_bar(t).float()[:, None, None]
    eps = process.from_x0("eps", pred.x0, x, abar)
    assert torch.allclose(process.to_x0("eps", eps, x, abar), pred.x0, atol=1e-5)


def test_logits_model_interpolates_embeddings():
    model = make("logits", normalize_embeddings=True)
    pred = model(torch.randn(2, L, D), torch.rand(2))
    expected = pred.logits.softmax(-1) @ model.embedding.table()
    assert torch.allclose(pred.x0, expected, atol=1e-6)
    assert torch.allclose(model.embedding.table().norm(dim=-1), torch.full((V,), D**0.5), atol=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_word_posterior_is_bayes_rule_under_the_forward_process(normalize):
    model = make("logits", normalize_embeddings=normalize, posterior_input=True)
    table = model.embedding.table().detach()
    abar = torch.tensor(0.4)
    x = abar.sqrt() * table[torch.tensor([[3, 5, 0, 1, 2, 4, 6]])] + (1 - abar).sqrt() * torch.randn(1, L, D)
    # Independent reference: q(w | x_t) ∝ N(x_t; √ᾱ·e_w, (1 − ᾱ) I) with a uniform prior over words.
    log_density = -((x[:, :, None, :] - abar.sqrt() * table) ** 2).sum(-1) / (2 * (1 - abar))
    ours = model.word_posterior_logits(x, abar.reshape(1, 1, 1))
    assert torch.allclose(ours.log_softmax(-1), log_density.log_softmax(-1), atol=1e-4)
    # Only models that ask for the posterior input carry its word vectors W_in.
    assert make("logits", posterior_input=False).word_in is None and model.word_in.shape == (V, 32)


def test_overlong_input_and_cond_are_refused():
    model = make()
    with pytest.raises(ValueError, match="exceeds"):
        model(torch.randn(1, L + 1, D), torch.rand(1))
    with pytest.raises(ValueError, match="conditioning"):
        model(torch.randn(1, L, D), torch.rand(1), cond=torch.zeros(1))


def test_nearest_and_clamp():
    emb = WordEmbedding(V, D)
    ids = torch.randint(0, V, (2, L))
    noisy = emb(ids) + 0.01 * torch.randn(2, L, D)
    assert torch.equal(emb.nearest(noisy), ids)
    assert torch.allclose(emb.clamp(noisy), emb(ids))


@pytest.mark.parametrize("predict", ["x0", "eps", "v", "logits"])
def test_loss_terms_are_finite_and_reported(predict):
    model = make(predict, self_condition=True).train()
    ids = torch.randint(0, V, (6, L))
    out = e2e_loss(
        model, Batch(ids), Config(diffusion=DiffusionConfig(steps=100)), generator=torch.Generator().manual_seed(0)
    )
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert {"loss", "prior", "rounding"} <= set(out.terms)
    assert ("ce" in out.terms) == (predict == "logits")
    assert model.embedding.weight.grad is not None and model.embedding.weight.grad.abs().sum() > 0


def test_loss_is_reproducible_under_a_generator():
    model = make()
    ids = torch.randint(0, V, (4, L))
    a = e2e_loss(
        model, Batch(ids), Config(diffusion=DiffusionConfig(steps=100)), generator=torch.Generator().manual_seed(3)
    ).loss
    b = e2e_loss(
        model, Batch(ids), Config(diffusion=DiffusionConfig(steps=100)), generator=torch.Generator().manual_seed(3)
    ).loss
    assert a.item() == b.item()


class Recorder:
    """The denoiser, recording the (x_t, t) of every call."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser, self.calls = denoiser, []

    def __call__(self, x_t, t, **kwargs):
        self.calls.append((x_t, t))
        return self.denoiser(x_t, t, **kwargs)

    def __getattr__(self, name):
        return getattr(self.denoiser, name)


def test_self_conditioning_gap_feeds_the_prediction_of_a_noisier_point_of_the_same_trajectory():
    spy = Recorder(make("logits", self_condition=True))
    B, gap = 3000, 0.3
    ids = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(2))
    config = DiffusionConfig(steps=100, self_cond_prob=1.0, self_cond_gap=gap)
    with torch.no_grad():
        e2e_loss(spy, Batch(ids), Config(diffusion=config), generator=torch.Generator().manual_seed(0))
    (x_prev, t_prev), (x_t, t) = spy.calls
    later = t_prev - t
    assert (later >= 0).all() and (later <= gap + 1e-6).all() and (later > 0.1).float().mean() > 0.5
    assert (t_prev <= 1).all() and (t_prev == 1).any()  # clipped at the noisiest level
    # x_t' ~ q(x_t' | x0): mean √ᾱ'·x0 and variance 1 − ᾱ' (+ ᾱ'σ0² for the word jitter in x0)
    abar = spy.schedule.alphas_cumprod.float()
    a = abar[(t_prev * 100).round().long() - 1][:, None, None]
    z = (x_prev - a.sqrt() * spy.embedding(ids)) / (1 - a + a * (1 - abar[0])).sqrt()
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02
    # and x_t' is tied to x_t: the two are far closer than independent draws would be
    same = (x_prev - x_t).pow(2).mean()
    other = (x_prev - x_t.roll(1, 0)).pow(2).mean()
    assert same < 0.8 * other
    plain = Recorder(make("logits", self_condition=True))
    with torch.no_grad():
        e2e_loss(
            plain,
            Batch(ids),
            Config(diffusion=DiffusionConfig(steps=100, self_cond_prob=1.0)),
            generator=torch.Generator().manual_seed(0),
        )
    assert torch.equal(plain.calls[0][0], plain.calls[1][0])  # gap 0: Analog Bits, the same x_t
