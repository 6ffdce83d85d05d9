import torch

from mtldm_cli.samplers import cfg_model_fn, q_sample, sample_ddim
from mtldm_cli.samplers import training_scheduler as scheduler
from mtldm_cli.separation import dirac_differential, gaussian_differential, karras_sigmas, sample_separation, separation_differential


def _schedule(steps):
    s = scheduler()
    s.set_timesteps(steps)
    return s.alphas_cumprod, s.timesteps, float(s.final_alpha_cumprod)


def oracle(x0):
    """The exact noise predictor for a point mass at x0."""
    ac, _, _ = _schedule(10)

    def fn(x, t):
        a = ac[int(t)]
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    return fn


def test_ddim_with_an_exact_model_recovers_the_data():
    x0 = torch.randn(1, 4, 2, 8, 4)
    ac, ts, _ = _schedule(20)
    for eta in (0.0, 1.0):
        out = sample_ddim(oracle(x0), torch.randn_like(x0), ac, ts, eta=eta, final_alpha=1.0,
                          generator=torch.Generator().manual_seed(0))
        assert torch.allclose(out, x0, atol=1e-4), eta


def test_ddim_is_deterministic_per_generator_and_reports_steps():
    ac, ts, final = _schedule(5)
    seen = []

    def model(x, t):
        return 0.1 * x

    x = torch.randn(1, 4, 2, 8, 4)
    a = sample_ddim(model, x, ac, ts, eta=1.0, generator=torch.Generator().manual_seed(3), callback=seen.append)
    b = sample_ddim(model, x, ac, ts, eta=1.0, generator=torch.Generator().manual_seed(3))
    c = sample_ddim(model, x, ac, ts, eta=1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert [s["i"] for s in seen] == list(range(5)) and seen[0]["total"] == 5


def test_arrangement_imputation_keeps_given_and_feeds_noised_version():
    ac, ts, final = _schedule(4)
    x0 = torch.randn(1, 4, 2, 8, 4)
    mask = torch.tensor([1.0, 0, 1.0, 0]).view(1, 4, 1, 1, 1)
    inputs = []

    def model(x, t):
        inputs.append((int(t), x.clone()))
        return torch.zeros_like(x)

    out = sample_ddim(model, torch.randn_like(x0), ac, ts, known=(x0, mask), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, [0, 2]], x0[:, [0, 2]])
    # at the first (noisiest) step the given stems fed to the model are x0 noised to that level
    t, x = inputs[0]
    a = ac[t]
    resid = (x[:, [0, 2]] - a.sqrt() * x0[:, [0, 2]]) / (1 - a).sqrt()
    assert 0.8 < resid.std() < 1.2  # unit-variance noise, not the raw given latent


def test_cfg_runs_one_batched_forward_equal_to_two_passes():
    calls = []

    def unet(x, t, c):
        calls.append(x.shape[0])
        return x * c.sum(-1).view(-1, 1, 1, 1, 1)

    cond, uncond = torch.ones(1, 3), torch.zeros(1, 3) + 0.5
    x = torch.randn(1, 4, 2, 8, 4)
    out = cfg_model_fn(unet, cond, uncond, 2.0)(x, torch.tensor(10))
    e_u, e_c = x * 1.5, x * 3.0
    assert torch.allclose(out, e_u + 2.0 * (e_c - e_u))
    assert calls == [2]
    calls.clear()
    cfg_model_fn(unet, cond, uncond, 1.0)(x, torch.tensor(10))
    assert calls == [1]


def test_given_stem_guidance_is_classifier_free_guidance_over_the_given_stems():
    """e_0 + g (e_given - e_0), and with text guidance InstructPix2Pix's three terms, each from one
    batched forward whose "unconditional" items are given nothing."""
    calls = []

    def unet(x, t, c, given):
        x0, mask = given
        calls.append(x.shape[0])
        known = (x0 * mask).flatten(1).sum(1).view(-1, 1, 1, 1, 1)  # what the item is given
        return x * (1 if c is None else c.sum(-1).view(-1, 1, 1, 1, 1)) + known

    x = torch.randn(1, 4, 2, 8, 4)
    x0, mask = torch.ones_like(x), torch.tensor([1.0, 0, 0, 0]).view(1, 4, 1, 1, 1)
    given = 2 * 8 * 4  # ones over one stem's latent
    out = cfg_model_fn(unet, None, None, 1.0, given=(x0, mask), given_scale=3.0)(x, torch.tensor(10))
    assert torch.allclose(out, x + 3.0 * given) and calls == [2]
    cond, uncond = torch.ones(1, 3), torch.zeros(1, 3) + 0.5
    calls.clear()
    out = cfg_model_fn(unet, cond, uncond, 2.0, given=(x0, mask), given_scale=3.0)(x, torch.tensor(10))
    e_0, e_g, e_gc = x * 1.5, x * 1.5 + given, x * 3.0 + given
    assert torch.allclose(out, e_0 + 3.0 * (e_g - e_0) + 2.0 * (e_gc - e_g)) and calls == [3]
    calls.clear()
    out = cfg_model_fn(unet, cond, uncond, 1.0, given=(x0, mask), given_scale=1.0)(x, torch.tensor(10))
    assert torch.allclose(out, x * 3.0 + given) and calls == [1]  # off: the plain conditional pass


def test_q_sample_interpolates():
    x0, n = torch.ones(3), torch.zeros(3)
    assert torch.allclose(q_sample(x0, torch.tensor(0.25), n), torch.full((3,), 0.5))


def test_karras_sigmas():
    s = karras_sigmas(10, 1e-4, 1.0)
    assert len(s) == 11 and s[0] == 1.0 and abs(float(s[-2]) - 1e-4) < 1e-10 and s[-1] == 0
    assert (s[:-1].diff() < 0).all()


def test_dirac_pins_the_mixture_constraint():
    m = torch.randn(1, 1, 2, 8, 4)
    x = torch.randn(1, 4, 2, 8, 4)
    d, xp = dirac_differential(x, 0.5, lambda v, s: v * 0.3, m, source=-1)
    assert torch.allclose(xp.mean(1, keepdim=True), m, atol=1e-6)
    assert torch.equal(d[:, -1], torch.zeros_like(d[:, -1]))
    assert torch.equal(x[:, :3], xp[:, :3])  # the input is not modified in place


def test_gaussian_pulls_towards_the_mixture():
    m = torch.zeros(1, 1, 2, 8, 4)
    x = torch.ones(1, 4, 2, 8, 4)
    d, _ = gaussian_differential(x, 0.5, lambda v, s: torch.zeros_like(v), m)
    # x moves by d * (sigma_next - sigma) with sigma_next < sigma: a positive d lowers x towards m
    assert (d > 0).all()


def test_separation_sampler_satisfies_the_mixture_with_dirac():
    m = torch.randn(1, 1, 2, 8, 4)
    diff = separation_differential("dirac", lambda v, s: torch.zeros_like(v), m, source=0)
    steps = []
    out = sample_separation(diff, torch.randn(1, 4, 2, 8, 4), karras_sigmas(6), s_churn=20, num_resamples=2,
                            generator=torch.Generator().manual_seed(0), callback=steps.append)
    assert len(steps) == 6
    assert torch.allclose(out.mean(1, keepdim=True), m, atol=1e-5)


def test_wiener_filter_recovers_disjoint_sources_and_sums_to_the_mixture():
    from mtldm_cli.separation import wiener_filter

    sr = 16000
    t = torch.arange(sr) / sr
    low, high = torch.sin(2 * torch.pi * 110 * t), 0.5 * torch.sin(2 * torch.pi * 3000 * t)
    mix = low + high
    rough = torch.stack([1.7 * low + 0.05 * torch.randn(sr), 0.3 * high + 0.05 * torch.randn(sr)])  # wrong gains, noise
    out = wiener_filter(rough, mix)
    assert torch.allclose(out.sum(0), mix, atol=1e-4)
    inner = slice(2048, -2048)  # away from the edges
    for est, ref in zip(out, (low, high)):
        assert float(((est - ref)[inner] ** 2).mean() / (ref[inner] ** 2).mean()) < 1e-2
    silent = wiener_filter(torch.zeros(2, sr), mix)
    assert torch.allclose(silent, mix.expand(2, -1) / 2, atol=1e-4)


def test_consistency_step_descends_the_mel_mixture_loss():
    """With a toy decoder, moving along the consistency term lowers the mel-domain mixture error."""
    from mtldm_cli.separation import consistency_differential

    torch.manual_seed(0)
    proj = torch.randn(8, 6)

    def decode_mel(z):  # [B, S, C, T, F] -> [B, S, T, M], smooth and non-linear like a decoder
        return torch.tanh(z.mean(2) @ proj[: z.shape[-1]])

    x = torch.randn(1, 4, 2, 5, 8)
    target = torch.randn(1, 5, 6) * 0.3

    def loss(z):
        return (0.5 * torch.logsumexp(2 * decode_mel(z), dim=1) - target).pow(2).sum()

    zero_score = lambda z, sigma: torch.zeros_like(z)
    d_plain, _ = consistency_differential(x, 0.5, zero_score, x.mean(1, keepdim=True), decode_mel=decode_mel,
                                          mixture_mel=target, guidance=0.0)
    d, _ = consistency_differential(x, 0.5, zero_score, x.mean(1, keepdim=True), decode_mel=decode_mel,
                                    mixture_mel=target, guidance=1.0)
    assert torch.allclose(d_plain, torch.zeros_like(x))  # mean already consistent, no score: nothing else moves
    step = x + (d - d_plain) * (-0.05)  # an Euler step towards lower sigma
    assert loss(step) < loss(x)


def test_separation_samples_each_batch_item_as_if_alone():
    """Chunks of a long mixture go through the sampler as one batch: with the same noise, each item
    ends where it would alone, for every method (a step size shared across the batch would fail)."""
    torch.manual_seed(0)
    proj = torch.randn(4, 3)

    def score(z, sigma):  # elementwise, like a model that sees each item on its own
        return torch.tanh(z) * 0.3

    def decode_mel(z):
        return torch.tanh(z.mean(2) @ proj[: z.shape[-1]])

    m, noise = torch.randn(3, 1, 2, 6, 4), torch.randn(3, 4, 2, 6, 4)
    mel = torch.randn(3, 6, 3) * 0.3
    for method, extra in (("dirac", {}), ("gaussian", {}),
                          ("consistency", {"decode_mel": decode_mel, "guidance": 1.0})):
        def run(items, method=method, extra=extra):
            kw = extra | ({"mixture_mel": mel[items]} if method == "consistency" else {})
            diff = separation_differential(method, score, m[items], **kw)
            return sample_separation(diff, noise[items], karras_sigmas(5), s_churn=0.0, num_resamples=1,
                                     generator=torch.Generator().manual_seed(0))

        together = run(slice(0, 3))
        for k in range(3):
            assert torch.allclose(together[k:k + 1], run(slice(k, k + 1)), atol=1e-5), (method, k)
