"""guidance/dns.py: DNS (paper Eq. 19) against its closed form, and its swapped-CFG form."""

import torch

from negguide.guidance.dns import dns_cfg, dns_combine, paper_scale_to_cfg


def preds(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)


def test_closed_form():
    d_empty, d_p = preds()
    for s in (0.5, 3.0, 7.0):
        expected = (1 + s) * d_empty - s * d_p
        assert torch.allclose(dns_combine(d_empty, d_p, s), expected, atol=1e-12)


def test_scale_zero_is_the_empty_prediction():
    d_empty, d_p = preds(1)
    assert torch.equal(dns_combine(d_empty, d_p, 0.0), d_empty)
    assert torch.allclose(dns_cfg(d_empty, d_p, 1.0), d_empty, atol=1e-12)


def test_cfg_form_is_eq19_with_s_plus_one():
    d_empty, d_p = preds(2)
    for s in (0.0, 2.0, 6.0):
        assert torch.allclose(dns_cfg(d_empty, d_p, paper_scale_to_cfg(s)), dns_combine(d_empty, d_p, s), atol=1e-12)


def test_cfg_form_is_comfy_cfg_with_swapped_prompts_bitwise():
    d_empty, d_p = (t.float() for t in preds(3))
    cond, uncond, scale = d_empty, d_p, 7.0  # positive = "", negative = p
    assert torch.equal(dns_cfg(d_empty, d_p, scale), uncond + (cond - uncond) * scale)


def test_moves_away_from_the_prompt():
    d_empty, d_p = preds(4)
    out = dns_combine(d_empty, d_p, 3.0)
    assert (out - d_p).norm() > (d_empty - d_p).norm()
