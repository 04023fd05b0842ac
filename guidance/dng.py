"""Dynamic Negative Guidance (DNG): negative guidance scaled by a tracked posterior.

Paper: Koulischer et al., "Dynamic Negative Guidance of Diffusion Models" (ICLR 2025).
Pure torch; no ComfyUI import. Everything works in ComfyUI's *denoised* space (D = predicted x0).

Guidance (paper Eq. 10, with the scores written as denoised predictions, which are affine in the
scores at fixed x and sigma, so the linear combination carries over exactly):

    D = D_ref - lambda_t (D_neg - D_ref),      lambda_t = lambda0 * p / (1 - p),  p = p(c-|x_t)

* text-to-image form (2 predictions): the positive prompt replaces the unconditional branch,
  D_ref = D_pos;
* CFG-on-positive form (3 predictions): D = D_empty + w (D_pos - D_empty) - lambda_t (D_neg - D_pos).

Posterior tracking (paper Sec. 3.2, Eq. 12 and Algorithm 2): a Bayes filter over the sampling
Markov chain. In ComfyUI's variance-exploding parameterisation x = x0 + sigma * eps, the DDPM
(ancestral, eta = 1) transition t -> s (t = sigma_t > s = sigma_s) has

    mu(D) = (s^2/t^2) x_t + (1 - s^2/t^2) D(x_t),    var = s^2 (t^2 - s^2) / t^2

and after observing x_s (the next step's input), per sample, summed over all dimensions:

    diff   = ||x_s - mu_neg||^2 - ||x_s - mu_ref||^2
    log p <- log p - tau * diff / (2 var) + delta / (2 var_VP),  then p is clamped to [p_min, p_max].

tau = 1, delta = 0 is Eq. 12 exactly; tau (temperature) and delta (offset) are Algorithm 2's
hyper-parameters. Algorithm 2 (and the official code) work in DDPM's variance-preserving
coordinates, x_VP = x_VE / sqrt(1 + sigma^2), alpha_bar = 1 / (1 + sigma^2):

* the likelihood term is coordinate-free: the VP means and x_s are the VE ones times
  sqrt(alpha_bar_s) and the VP variance is var * alpha_bar_s, so tau * diff / (2 var) is the same
  number in either coordinates (kept in VE form);
* the offset is a bare number divided by 2 sigma_t^2 of Algorithm 2, i.e. by the VP step variance

      var_VP = var * alpha_bar_s = s^2 (t^2 - s^2) / (t^2 (1 + s^2))
             = (1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_t),   alpha_t = alpha_bar_t / alpha_bar_s,

  the DDPM posterior variance beta~_t that the official code's compute_posterior_DNG divides by.
  Algorithm 2 writes sigma_t^2 = 1 - alpha_t (= beta_t); the two differ by the factor
  (1 - alpha_bar_s) / (1 - alpha_bar_t), ~1 at high noise (SD's first step from sigma 14.61:
  0.9987 with 50 steps, 0.996 with 20) and < 1 at low noise. Dividing delta by the VE variance
  instead shrinks it by alpha_bar_s = 1/(1+s^2): 0.6% of the paper's effect on SD's first step
  of 50 (0.9% of 20), so the paper's delta values would act only at low noise.

Flow-matching (CONST) models, x = (1 - sigma) x0 + sigma eps, are converted first:
y = x / (1 - sigma) = x0 + sigma' eps with sigma' = sigma / (1 - sigma) (D = x0 is unchanged);
var_VP then uses sigma' (alpha_bar = 1 / (1 + sigma'^2)).

The update is the exact Bayes rule for ancestral DDPM steps (ComfyUI's ``ddpm``, and
``euler_ancestral`` with eta = 1 on EPS / v-prediction models). Deterministic samplers (euler,
heun, dpmpp_2m, ...) do not draw x_s from that Gaussian: the filter is then an approximation.
The guidance at a step uses the posterior after the latest observed transition (the paper's
staggering); the first step uses the prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DNGParams:
    """The user-facing hyper-parameters of DNG (paper Algorithm 1/2 notation)."""

    lambda0: float = 15.0
    prior: float = 0.01
    tau: float = 0.25
    delta: float = 0.003
    p_min: float = 1e-6
    p_max: float = 0.99

    def validate(self, who: str = "DNG") -> "DNGParams":
        """Raise ValueError on inputs the math cannot use."""
        if not all(math.isfinite(v) for v in (self.lambda0, self.prior, self.tau, self.delta, self.p_min, self.p_max)):
            raise ValueError(f"{who}: every parameter must be finite.")
        if not (0.0 < self.p_min < 1.0 and 0.0 < self.p_max < 1.0):
            raise ValueError(f"{who}: p_min ({self.p_min}) and p_max ({self.p_max}) must lie strictly between 0 and 1.")
        if self.p_max <= self.p_min:
            raise ValueError(f"{who}: p_max ({self.p_max}) must be larger than p_min ({self.p_min}).")
        if not (self.p_min <= self.prior <= self.p_max):
            raise ValueError(
                f"{who}: the prior ({self.prior}) must lie in [p_min, p_max] = [{self.p_min}, {self.p_max}]."
            )
        if self.lambda0 < 0 or self.tau < 0:
            raise ValueError(f"{who}: lambda0 ({self.lambda0}) and temperature ({self.tau}) must be >= 0.")
        return self


# ----------------------------------------------------------------------------- the math


def clamp_log_posterior(log_p: torch.Tensor, p_min: float, p_max: float) -> torch.Tensor:
    """log p clamped to [log p_min, log p_max] (Algorithm 2's clamping of the posterior)."""
    return log_p.clamp(math.log(p_min), math.log(p_max))


def guidance_scale(log_p: torch.Tensor, lambda0: float) -> torch.Tensor:
    """lambda_t = lambda0 * p / (1 - p) (paper Eq. 10), from log p [B]; p < 1 required
    (guaranteed by the clamp to p_max < 1)."""
    p = log_p.exp()
    return lambda0 * p / (1.0 - p)


def to_variance_exploding(x: torch.Tensor, sigma: float, flow: bool) -> tuple[torch.Tensor, float]:
    """(y, sigma') in the VE form y = x0 + sigma' eps. EPS/v-prediction latents already are
    (y = x); flow-matching latents x = (1-sigma) x0 + sigma eps give y = x / (1-sigma),
    sigma' = sigma / (1-sigma). sigma = 1 (pure noise) maps to sigma' = inf."""
    if not flow:
        return x, float(sigma)
    if sigma >= 1.0:
        return x, math.inf
    return x / (1.0 - sigma), float(sigma) / (1.0 - float(sigma))


@dataclass
class Transition:
    """The Gaussian DDPM transition t -> s from one model evaluation at x_t, in VE coordinates:
    mean_ref / mean_neg = r y_t + (1 - r) D (r = s'^2 / t'^2), shared variance ``var``."""

    mean_ref: torch.Tensor
    mean_neg: torch.Tensor
    var: float
    s: float  # the (unconverted) sigma this transition lands on
    flow: bool

    @property
    def var_vp(self) -> float:
        """The step variance in DDPM's VP coordinates: var * alpha_bar_s = var / (1 + s'^2)
        (Algorithm 2's sigma_t^2 as the official code computes it; see the module docstring)."""
        s_ve = self.s / (1.0 - self.s) if self.flow else self.s
        return vp_step_variance(self.var, s_ve)


def vp_step_variance(var: float, s_ve: float) -> float:
    """VE step variance ``var`` landing on VE sigma ``s_ve`` -> the VP one, var / (1 + s_ve^2):
    x_VP = sqrt(alpha_bar_s) x_VE with alpha_bar_s = 1 / (1 + s_ve^2)."""
    return var / (1.0 + s_ve * s_ve)


def ddpm_transition(x_t: torch.Tensor, d_ref: torch.Tensor, d_neg: torch.Tensor, t: float, s: float,
                    flow: bool = False) -> Transition | None:
    """The ancestral DDPM step's Gaussian t -> s for the reference and the negative branch
    (paper Eq. 2 in VE form; notes: mu = (s^2/t^2) x_t + (1 - s^2/t^2) D, var = s^2 (t^2-s^2)/t^2).
    None when s = 0 (the last step: a point mass, nothing left to observe)."""
    if not s < t:
        raise ValueError(f"DNG: a transition must lower the noise level (t={t}, s={s}).")
    if s <= 0.0:
        return None
    if flow:
        # r = (s'/t')^2 with s' = s/(1-s), t' = t/(1-t); r * y_t = r * x_t/(1-t) written so t = 1 is finite.
        ratio = s * (1.0 - t) / (t * (1.0 - s))
        r = ratio * ratio
        coef_x = ratio * s / (t * (1.0 - s))  # = r / (1 - t)
        s_ve = s / (1.0 - s)
    else:
        r = (s * s) / (t * t)
        coef_x = r
        s_ve = s
    var = s_ve * s_ve * (1.0 - r)
    base = x_t * coef_x
    return Transition(base + (1.0 - r) * d_ref, base + (1.0 - r) * d_neg, var, s, flow)


def posterior_update(log_p: torch.Tensor, x_s: torch.Tensor, transition: Transition, tau: float, delta: float,
                     p_min: float, p_max: float) -> torch.Tensor:
    """One Bayes-filter step (paper Eq. 12 with Algorithm 2's tau/delta), per sample:
    log p + (-tau * (||x_s - mu_neg||^2 - ||x_s - mu_ref||^2)) / (2 var) + delta / (2 var_VP), clamped.
    The tau term is coordinate-free; delta is divided by Algorithm 2's VP step variance
    (``Transition.var_vp``), as in the paper and the official code.
    ``x_s`` is the observed latent at sigma s in the model's own parameterisation."""
    y_s, _ = to_variance_exploding(x_s, transition.s, transition.flow)
    # ||y - a||^2 - ||y - b||^2 = (b - a) . (2y - a - b): one pass, no cancellation of two large norms.
    dims = tuple(range(1, y_s.ndim))
    diff = ((transition.mean_ref - transition.mean_neg) * (2.0 * y_s - transition.mean_neg - transition.mean_ref)).sum(dims)
    updated = log_p + (-tau * diff.to(log_p.dtype)) / (2.0 * transition.var) + delta / (2.0 * transition.var_vp)
    return clamp_log_posterior(updated, p_min, p_max)


def _per_sample(lam: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return lam.to(like).view(-1, *([1] * (like.ndim - 1)))


def add_negative_guidance(base: torch.Tensor, d_pos: torch.Tensor, d_neg: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """base - lambda_t (D_neg - D_pos), lambda_t per sample [B] (paper Eq. 10's negative term on
    top of ``base``: D_pos, or a CFG result on the positive)."""
    return base - _per_sample(lam, d_pos) * (d_neg - d_pos)


def guide_t2i(d_pos: torch.Tensor, d_neg: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Text-to-image DNG (paper Eq. 10, the positive replacing the unconditional branch):
    D = D_pos - lambda_t (D_neg - D_pos), lambda_t per sample [B]."""
    return add_negative_guidance(d_pos, d_pos, d_neg, lam)


def guide_cfg(d_empty: torch.Tensor, d_pos: torch.Tensor, d_neg: torch.Tensor, cfg: float, lam: torch.Tensor) -> torch.Tensor:
    """CFG on the positive plus DNG: D = D_empty + w (D_pos - D_empty) - lambda_t (D_neg - D_pos).
    The first two terms are written exactly as ComfyUI's cfg_function, so lambda_t = 0 is bit-identical."""
    return add_negative_guidance(d_empty + (d_pos - d_empty) * cfg, d_pos, d_neg, lam)


def exact_log_prior(batch: int, prior: float, device=None) -> torch.Tensor:
    return torch.full((batch,), math.log(prior), dtype=torch.float64, device=device)


# ----------------------------------------------------------------------------- the tracker


class UntrackableSampler(ValueError):
    """The sampler's model calls cannot be mapped onto its own sigma schedule."""


@dataclass
class _Observed:
    index: int  # position in the sampler's sigma schedule
    sigma: float
    log_p: torch.Tensor  # posterior at this step (after observing x at this sigma)
    transition: Transition | None  # this step's t -> next-sigma Gaussians (None at the last step)


@dataclass
class PosteriorTracker:
    """Per-run, per-sample posterior p(c-|x_t) tracked over a ComfyUI sampler's model calls.

    Call :meth:`reset` at the start of every sampling run and :meth:`observe` at every model
    evaluation; it returns lambda_t [B] for that evaluation. Only evaluations at the sampler's
    own sigmas (``sample_sigmas``) update the posterior: intermediate stages of multi-stage
    samplers (dpm_2 / dpmpp_2s midpoints) reuse the latest posterior. A second evaluation at the
    same schedule sigma (heun's corrector evaluates sigma_{i+1} at the Euler predictor first,
    then the real step starts there) replaces the first: the update is recomputed from the
    previous step's kept transition with the newer x, so the real x_s wins.

    ``tracking=False`` keeps lambda at its prior value (constant-scale negative prompting with
    lambda = lambda0 * prior / (1 - prior)); used to measure the tracking overhead."""

    params: DNGParams
    tracking: bool = True
    history: list = field(default_factory=list)  # [(sigma, p [B], lambda [B])] per schedule step
    _grid: list | None = None
    _current: _Observed | None = None
    _previous: _Observed | None = None
    _log_p: torch.Tensor | None = None

    def reset(self) -> None:
        self.history = []
        self._grid = None
        self._current = None
        self._previous = None
        self._log_p = None

    # -- helpers
    def _index(self, sigma: float, sample_sigmas) -> int | None:
        if self._grid is None:
            if sample_sigmas is None:
                raise UntrackableSampler(
                    "DNG: the sampler did not provide its sigma schedule (transformer_options['sample_sigmas']), "
                    "so the posterior cannot be tracked. Use a KSampler / SamplerCustom(Advanced) sampler."
                )
            self._grid = [float(v) for v in torch.as_tensor(sample_sigmas).flatten().tolist()]
        for i, g in enumerate(self._grid):
            if abs(g - sigma) <= 1e-5 * max(abs(g), 1e-3):
                return i
        return None

    def _prior(self, batch: int, device) -> torch.Tensor:
        return exact_log_prior(batch, self.params.prior, device)

    def _record(self, index: int, sigma: float, log_p: torch.Tensor) -> None:
        p = log_p.exp().detach()
        entry = (index, sigma, p, guidance_scale(log_p, self.params.lambda0).detach())
        if self.history and self.history[-1][0] == index:
            self.history[-1] = entry
        else:
            self.history.append(entry)

    def current_log_p(self, batch: int, device) -> torch.Tensor:
        if self._log_p is None or self._log_p.shape[0] != batch:
            return self._prior(batch, device)
        return self._log_p

    # -- the per-call entry point
    def observe(self, x: torch.Tensor, sigma: float, sample_sigmas, d_ref: torch.Tensor | None,
                d_neg: torch.Tensor | None, flow: bool = False) -> torch.Tensor:
        """Update with the model evaluation at (x, sigma) and return lambda_t [B] (float64)."""
        batch = x.shape[0]
        if self._log_p is not None and self._log_p.shape[0] != batch:
            raise UntrackableSampler(
                f"DNG: the batch size changed within one sampling run ({self._log_p.shape[0]} -> {batch})."
            )
        if not self.tracking or d_ref is None or d_neg is None:
            log_p = self.current_log_p(batch, x.device)
            self._log_p = log_p
            index = self._index(sigma, sample_sigmas) if self.tracking else None
            if index is not None:
                self._record(index, sigma, log_p)
            return guidance_scale(log_p, self.params.lambda0)
        index = self._index(sigma, sample_sigmas)
        if index is None:  # an intermediate stage: no update
            return guidance_scale(self.current_log_p(batch, x.device), self.params.lambda0)
        current = self._current
        if current is None:
            base, transition = None, None
        elif index == current.index:
            base = self._previous
        elif index == current.index + 1:
            self._previous = base = current
        else:
            raise UntrackableSampler(
                f"DNG: the sampler went from sigma {current.sigma:.5g} (step {current.index}) to sigma {sigma:.5g} "
                f"(step {index}) in one run; the posterior can only follow samplers that step through their "
                "schedule in order (not restart / adaptive-step samplers such as dpm_fast or dpm_adaptive)."
            )
        if base is None or base.transition is None:
            log_p = self._prior(batch, x.device) if base is None else base.log_p
        else:
            p = self.params
            log_p = posterior_update(base.log_p, x, base.transition, p.tau, p.delta, p.p_min, p.p_max)
        transition = None
        if index + 1 < len(self._grid):
            s = self._grid[index + 1]
            if s < sigma:
                transition = ddpm_transition(x, d_ref, d_neg, sigma, s, flow)  # converts flow x_t itself
        self._current = _Observed(index, sigma, log_p, transition)
        self._log_p = log_p
        self._record(index, sigma, log_p)
        return guidance_scale(log_p, self.params.lambda0)

    def curves(self) -> dict:
        """The recorded run: sigmas [T], posterior p [T, B], lambda [T, B] (CPU float64)."""
        if not self.history:
            return {"sigma": torch.zeros(0, dtype=torch.float64), "p": torch.zeros(0, 0, dtype=torch.float64),
                    "lambda": torch.zeros(0, 0, dtype=torch.float64)}
        return {
            "sigma": torch.tensor([h[1] for h in self.history], dtype=torch.float64),
            "p": torch.stack([h[2].cpu().double() for h in self.history]),
            "lambda": torch.stack([h[3].cpu().double() for h in self.history]),
        }
