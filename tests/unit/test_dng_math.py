"""DNG math (guidance/dng.py) on the paper's own validation: a 1-D Gaussian mixture with exact
scores (paper Sec. 3.1, Fig. 1 and Fig. 3a; methods note Sec. 3), plus unit checks.

The mixture: three modes N(mu_k, V0) with equal weights; the negative concept c- is the middle
mode. In ComfyUI's VE form x_sigma = x0 + sigma eps, so p_sigma(x) = sum_k w_k N(x; mu_k, V0 + sigma^2)
and the exact denoisers are responsibilities-weighted per-mode posterior means. Sampling is the
ancestral DDPM chain (the Gaussian of guidance.dng.ddpm_transition), the setting in which the
posterior update is exact.
"""

import math

import pytest
import torch

from negguide.guidance import dng

DT = torch.float64
MEANS = torch.tensor([-3.0, 0.0, 3.0], dtype=DT)
WEIGHTS = torch.tensor([1 / 3, 1 / 3, 1 / 3], dtype=DT)
V0 = 0.25  # each mode's variance (std 0.5)
NEG = torch.tensor([False, True, False])  # c- = the middle mode
N_SAMPLES = 10000
SIGMAS = torch.cat([torch.exp(torch.linspace(math.log(20.0), math.log(0.01), 200, dtype=DT)), torch.zeros(1, dtype=DT)])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small element-wise work: one thread is faster than two on the shared 2-core machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def mixture(x, sigma):
    """(D_all, D_neg, p(c-|x)) from one responsibilities computation."""
    var = V0 + sigma**2
    logits = torch.log(WEIGHTS) - 0.5 * (x[:, None] - MEANS) ** 2 / var
    gamma = torch.softmax(logits, dim=1)
    per_mode = MEANS + V0 / var * (x[:, None] - MEANS)
    gamma_neg = torch.softmax(logits.masked_fill(~NEG, -math.inf), dim=1)
    return (gamma * per_mode).sum(1), (gamma_neg * per_mode).sum(1), gamma[:, NEG].sum(1)


def target_samples(n, generator):
    """Exact samples of the remaining modes (what CFG towards c+ = 'not c-' samples)."""
    keep = MEANS[~NEG]
    idx = torch.randint(0, len(keep), (n,), generator=generator)
    return keep[idx] + math.sqrt(V0) * torch.randn(n, generator=generator, dtype=DT)


def target_cdf(x):
    """The CDF of the remaining modes' mixture (the exact target)."""
    keep = MEANS[~NEG]
    z = (x[:, None] - keep) / math.sqrt(V0)
    return (0.5 * (1 + torch.erf(z / math.sqrt(2)))).mean(1)


def wasserstein1_to_target(samples):
    """W1 = integral |F_samples - F_target| dx, on a 1e-3 grid over [-10, 10]."""
    grid = torch.linspace(-10.0, 10.0, 20001, dtype=DT)
    empirical = torch.searchsorted(samples.sort().values, grid, right=True).to(DT) / samples.numel()
    return ((empirical - target_cdf(grid)).abs().sum() * (grid[1] - grid[0])).item()


def ancestral(guided_denoiser, generator, observe=None):
    """The ancestral DDPM chain in VE form: x_s ~ N(mu(D_guided), var) (ComfyUI's ddpm /
    euler_ancestral eta=1), with ``observe(x, sigma)`` called at every schedule sigma first."""
    x = SIGMAS[0] * torch.randn(N_SAMPLES, generator=generator, dtype=DT)
    for i in range(len(SIGMAS) - 1):
        t, s = SIGMAS[i].item(), SIGMAS[i + 1].item()
        d = guided_denoiser(x, t)
        if observe is not None:
            observe(x, t)
        step = dng.ddpm_transition(x, d, d, t, s)
        x = d if step is None else step.mean_ref + math.sqrt(step.var) * torch.randn(x.shape, generator=generator, dtype=DT)
    return x


# ----------------------------------------------------------------------------- (a) Fig. 1


def test_exact_posterior_dng_samples_the_remaining_modes_while_np_does_not():
    """(a) With the exact posterior and lambda0 = 1, DNG (guide_t2i / guidance_scale) samples the
    mixture of the remaining modes: W1 to exact target samples < 0.06 (the two-sample noise floor
    at n = 20000 is ~0.02). Constant-scale NP (lambda = 1) does not: W1 > 0.5, and it leaves
    the target's support (its samples pile up away from the modes)."""
    g = torch.Generator().manual_seed(0)
    p_min, p_max = 1e-12, 1 - 1e-9

    def dng_exact(x, sigma):
        d_all, d_neg, p_neg = mixture(x, sigma)
        lam = dng.guidance_scale(dng.clamp_log_posterior(p_neg.log(), p_min, p_max), 1.0)
        return dng.guide_t2i(d_all, d_neg, lam)

    def negative_prompting(x, sigma):
        d_all, d_neg, _ = mixture(x, sigma)
        return dng.guide_t2i(d_all, d_neg, torch.ones(x.shape[0], dtype=DT))

    w_dng = wasserstein1_to_target(ancestral(dng_exact, g))
    w_np = wasserstein1_to_target(ancestral(negative_prompting, g))
    w_noise = wasserstein1_to_target(target_samples(N_SAMPLES, g))
    print(f"W1: DNG {w_dng:.4f}, NP {w_np:.4f}, two-sample noise {w_noise:.4f}")
    assert w_noise < 0.1
    assert w_dng < 0.1, (w_dng, w_np)
    assert w_np > 1.0, (w_dng, w_np)


# ----------------------------------------------------------------------------- (b) Fig. 3a


def test_tracked_posterior_follows_the_exact_posterior_on_average():
    """(b) The Bayes filter (PosteriorTracker, tau = 1, delta = 0, prior = the true weight 1/3)
    run on the DNG-guided ancestral chain: at every step the sample-mean of the tracked p(c-|x_t)
    is within 0.04 of the sample-mean of the exact posterior (max over the 200 steps), and the
    mean absolute error over steps is below 0.02 (measured: max 0.015, mean 0.009). The chain uses the tracked lambda (lambda0 = 1)."""
    g = torch.Generator().manual_seed(1)
    params = dng.DNGParams(lambda0=1.0, prior=1 / 3, tau=1.0, delta=0.0, p_min=1e-12, p_max=1 - 1e-9)
    tracker = dng.PosteriorTracker(params)
    tracker.reset()
    exact_means = []

    def guided(x, sigma):
        d_ref, d_neg, p_neg = mixture(x, sigma)
        lam = tracker.observe(x[:, None], sigma, SIGMAS, d_ref[:, None], d_neg[:, None])
        exact_means.append(p_neg.mean().item())
        return dng.guide_t2i(d_ref, d_neg, lam)

    samples = ancestral(guided, g)
    tracked_means = tracker.curves()["p"].mean(1)
    exact_means = torch.tensor(exact_means, dtype=DT)
    assert tracked_means.shape == exact_means.shape == (len(SIGMAS) - 1,)
    err = (tracked_means - exact_means).abs()
    print(f"|mean tracked p - mean exact p|: max {err.max().item():.4f}, mean {err.mean().item():.4f}")
    assert err.max().item() < 0.04, err.max().item()
    assert err.mean().item() < 0.02, err.mean().item()
    # and the run removed the negative mode: few samples end near 0
    frac = (samples.abs() < 1.0).double().mean().item()
    assert frac < 0.06, frac  # 0.32 without guidance, 0.0 for the exact target


def test_tracker_with_exact_posterior_prior_starts_at_prior_and_resets():
    params = dng.DNGParams(lambda0=2.0, prior=0.25)
    tracker = dng.PosteriorTracker(params)
    x = torch.randn(3, 4)
    lam = tracker.observe(x, 1.0, torch.tensor([1.0, 0.5, 0.0]), x, x + 1)
    assert torch.allclose(lam, torch.full((3,), 2.0 * 0.25 / 0.75, dtype=DT))
    tracker.reset()
    assert tracker.history == [] and tracker.curves()["p"].numel() == 0


# ----------------------------------------------------------------------------- unit checks


def test_lambda0_zero_is_identity():
    g = torch.Generator().manual_seed(2)
    d_pos, d_neg, d_empty = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    lam = dng.guidance_scale(torch.log(torch.tensor([0.5, 0.99], dtype=DT)), 0.0)
    assert torch.equal(dng.guide_t2i(d_pos, d_neg, lam), d_pos)
    cfg = 7.5
    assert torch.equal(dng.guide_cfg(d_empty, d_pos, d_neg, cfg, lam), d_empty + (d_pos - d_empty) * cfg)


def test_guidance_is_per_sample_and_matches_eq10():
    d_pos = torch.zeros(2, 3)
    d_neg = torch.ones(2, 3)
    log_p = torch.log(torch.tensor([0.5, 0.2], dtype=DT))
    lam = dng.guidance_scale(log_p, 4.0)
    assert torch.allclose(lam, torch.tensor([4.0, 1.0], dtype=DT))
    out = dng.guide_t2i(d_pos, d_neg, lam)
    assert torch.allclose(out, torch.tensor([[-4.0] * 3, [-1.0] * 3]))


def test_clamping():
    log_p = torch.log(torch.tensor([1e-9, 0.5, 0.999999], dtype=DT))
    clamped = dng.clamp_log_posterior(log_p, 1e-6, 0.99).exp()
    assert torch.allclose(clamped, torch.tensor([1e-6, 0.5, 0.99], dtype=DT))
    # an update that would push p above p_max stays finite and at p_max
    step = dng.ddpm_transition(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), 1.0, 0.5)
    updated = dng.posterior_update(torch.log(torch.tensor([0.5], dtype=DT)), torch.ones(1, 2), step, 1.0, 0.0, 1e-6, 0.99)
    assert math.isclose(updated.exp().item(), 0.99, rel_tol=1e-12)


def test_update_is_eq12_for_tau1_delta0():
    """log p_s = log p_t - (||x_s - mu_neg||^2 - ||x_s - mu_ref||^2) / (2 var), var = s^2 (t^2-s^2)/t^2."""
    g = torch.Generator().manual_seed(3)
    x_t, d_ref, d_neg, x_s = (torch.randn(2, 5, generator=g, dtype=DT) for _ in range(4))
    t, s = 2.0, 1.2
    step = dng.ddpm_transition(x_t, d_ref, d_neg, t, s)
    mu_ref = s**2 / t**2 * x_t + (1 - s**2 / t**2) * d_ref
    mu_neg = s**2 / t**2 * x_t + (1 - s**2 / t**2) * d_neg
    var = s**2 * (t**2 - s**2) / t**2
    assert torch.allclose(step.mean_ref, mu_ref) and torch.allclose(step.mean_neg, mu_neg) and math.isclose(step.var, var)
    log_p0 = torch.log(torch.tensor([0.3, 0.3], dtype=DT))
    expected = log_p0 - (((x_s - mu_neg) ** 2).sum(1) - ((x_s - mu_ref) ** 2).sum(1)) / (2 * var)
    got = dng.posterior_update(log_p0, x_s, step, 1.0, 0.0, 1e-300, 1 - 1e-15)
    assert torch.allclose(got, expected.clamp(max=math.log(1 - 1e-15)))
    # tau scales the likelihood term (over 2 var, unchanged); delta adds delta / (2 var_VP), var_VP = var / (1 + s^2)
    got2 = dng.posterior_update(log_p0, x_s, step, 0.5, 0.01, 1e-300, 1 - 1e-15)
    expected2 = log_p0 - 0.5 * (((x_s - mu_neg) ** 2).sum(1) - ((x_s - mu_ref) ** 2).sum(1)) / (2 * var) \
        + 0.01 * (1 + s**2) / (2 * var)
    assert torch.allclose(got2, expected2.clamp(max=math.log(1 - 1e-15)))


@pytest.mark.parametrize("t,s,flow,var_vp", [
    # hand-computed: alpha_bar = 1/(1+sigma^2); var_VP = (1-ab_s)/(1-ab_t) * (1 - ab_t/ab_s)
    (2.0, 1.0, False, 0.375),  # ab_t = 0.2, ab_s = 0.5: 0.5/0.8 * 0.6
    (14.6, 12.0, False, 0.32221352262506386),  # ab_t = 1/214.16, ab_s = 1/145
    (0.8, 0.5, True, 0.46875),  # flow: sigma' = 4 -> 1, ab_t = 1/17, ab_s = 0.5: 0.5/(16/17) * (1 - 2/17)
])
def test_offset_is_divided_by_the_vp_ddpm_step_variance(t, s, flow, var_vp):
    """Algorithm 2 / the official code: delta / (2 sigma_t^2) with sigma_t^2 the DDPM step
    variance in VP coordinates, (1-ab_s)/(1-ab_t) (1-alpha_t) (-> Algorithm 2's 1 - alpha_t at
    high noise); the tau term stays over the VE variance (it is coordinate-free)."""
    ab_t, ab_s = (1 / (1 + v * v) for v in ((t / (1 - t), s / (1 - s)) if flow else (t, s)))
    assert math.isclose((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s), var_vp, rel_tol=1e-12)  # the reference itself
    x_t = torch.zeros(1, 4, dtype=DT)
    d = torch.ones(1, 4, dtype=DT)
    step = dng.ddpm_transition(x_t, d, d, t, s, flow=flow)  # d_ref = d_neg: diff = 0, only delta acts
    assert math.isclose(step.var_vp, var_vp, rel_tol=1e-12)
    log_p0 = torch.full((1,), math.log(0.01), dtype=DT)
    got = dng.posterior_update(log_p0, torch.randn(1, 4, dtype=DT), step, 0.25, 0.003, 1e-6, 0.99)
    assert math.isclose(float(got - log_p0), 0.003 / (2 * var_vp), rel_tol=1e-12)
    if (t, s) == (14.6, 12.0):  # SD's first step: delta's increment 0.003 / (2 * 0.3222) = 0.004655
        assert math.isclose(float(got - log_p0), 0.0046552, rel_tol=1e-4)


def test_flow_conversion():
    """CONST models: x = (1-sigma) x0 + sigma eps -> y = x/(1-sigma) = x0 + sigma' eps,
    sigma' = sigma/(1-sigma); the transition equals the VE one on converted coordinates, and
    sigma = 1 (pure noise) is finite."""
    g = torch.Generator().manual_seed(4)
    x0, eps = torch.randn(2, 6, generator=g, dtype=DT), torch.randn(2, 6, generator=g, dtype=DT)
    sigma = 0.6
    y, s_ve = dng.to_variance_exploding((1 - sigma) * x0 + sigma * eps, sigma, flow=True)
    assert math.isclose(s_ve, 1.5)
    assert torch.allclose(y, x0 + s_ve * eps)
    x_t, d_ref, d_neg = (torch.randn(2, 6, generator=g, dtype=DT) for _ in range(3))
    t, s = 0.8, 0.5
    flow = dng.ddpm_transition(x_t, d_ref, d_neg, t, s, flow=True)
    ve = dng.ddpm_transition(x_t / (1 - t), d_ref, d_neg, t / (1 - t), s / (1 - s))
    assert torch.allclose(flow.mean_ref, ve.mean_ref) and torch.allclose(flow.mean_neg, ve.mean_neg)
    assert math.isclose(flow.var, ve.var)
    at_one = dng.ddpm_transition(x_t, d_ref, d_neg, 1.0, s, flow=True)
    assert torch.allclose(at_one.mean_ref, d_ref) and math.isclose(at_one.var, (s / (1 - s)) ** 2)
    # the observation is converted too: same posterior update either way
    x_s = torch.randn(2, 6, generator=g, dtype=DT)
    log_p = torch.full((2,), math.log(0.1), dtype=DT)
    ve_obs = dng.Transition(ve.mean_ref, ve.mean_neg, ve.var, s / (1 - s), False)
    assert torch.allclose(dng.posterior_update(log_p, x_s, flow, 0.3, 0.0, 1e-9, 0.99),
                          dng.posterior_update(log_p, x_s / (1 - s), ve_obs, 0.3, 0.0, 1e-9, 0.99))


def test_tracker_updates_only_on_schedule_sigmas_and_replays_heun_corrector():
    params = dng.DNGParams(lambda0=1.0, prior=0.1, tau=1.0, delta=0.0, p_min=1e-9, p_max=0.999)
    grid = torch.tensor([2.0, 1.0, 0.5, 0.0])
    g = torch.Generator().manual_seed(5)
    x0, d_ref, d_neg = (torch.randn(2, 3, generator=g, dtype=DT) for _ in range(3))
    x1_pred, x1 = torch.randn(2, 3, generator=g, dtype=DT), torch.randn(2, 3, generator=g, dtype=DT)
    tr = dng.PosteriorTracker(params)
    tr.observe(x0, 2.0, grid, d_ref, d_neg)
    before = tr.current_log_p(2, None).clone()
    tr.observe(x0 * 0.3, 1.41, grid, d_ref, d_neg)  # an intermediate stage: no update
    assert torch.equal(tr.current_log_p(2, None), before)
    tr.observe(x1_pred, 1.0, grid, d_ref, d_neg)  # heun's predictor at the next sigma
    tr.observe(x1, 1.0, grid, d_ref, d_neg)  # the real step: recomputed from step 0 with x1
    step = dng.ddpm_transition(x0, d_ref, d_neg, 2.0, 1.0)
    expected = dng.posterior_update(before, x1, step, 1.0, 0.0, 1e-9, 0.999)
    assert torch.allclose(tr.current_log_p(2, None), expected)
    assert len(tr.history) == 2 and [h[1] for h in tr.history] == [2.0, 1.0]
    with pytest.raises(ValueError, match="in order"):
        tr.observe(x1, 2.0, grid, d_ref, d_neg)  # sigma going back up within one run


def test_tracker_requires_a_schedule_and_params_validate():
    tr = dng.PosteriorTracker(dng.DNGParams())
    with pytest.raises(ValueError, match="sigma schedule"):
        tr.observe(torch.zeros(1, 2), 1.0, None, torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="p_max"):
        dng.DNGParams(p_min=0.5, p_max=0.5).validate()
    with pytest.raises(ValueError, match="prior"):
        dng.DNGParams(prior=0.999, p_max=0.99).validate()
    dng.DNGParams().validate()


def test_tracking_off_keeps_the_prior_scale():
    params = dng.DNGParams(lambda0=3.0, prior=0.5)
    tr = dng.PosteriorTracker(params, tracking=False)
    grid = torch.tensor([2.0, 1.0, 0.0])
    for sigma in (2.0, 1.0):
        lam = tr.observe(torch.randn(2, 3), sigma, grid, torch.randn(2, 3), torch.randn(2, 3))
        assert torch.allclose(lam, torch.full((2,), 3.0, dtype=DT))
