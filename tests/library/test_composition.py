"""NegGuide nodes combined on one model: the result must not depend on the order of the nodes.

NegToMe edits the finished output of each attention; VSF changes what the attention computes
(extra negative tokens in the text, one fused call per query group). Whatever order the user
chains them in, NegToMe must see VSF's whole attention output and the real text length, so both
orders give the same result, and that result differs from either method alone."""

import pytest
import torch

import nodes

from negguide.harness import zoo
from negguide.nodes.negtome import NegGuideNegToMe
from negguide.nodes.vsf import NegGuideVSF

ARCHS = ("sd15", "sd3", "flux", "qwen_image", "wan21", "z_image", "hunyuan_video15")


def vsf(entry, model):
    return NegGuideVSF.execute(model, entry.clip, "a red square", 3.0, 0.1, 0.0, 1.0).args[0]


def negtome(entry, model, mode):
    if mode == "reference image":
        reference = {"samples": torch.randn(entry.empty_latent(64, 64, 1)["samples"].shape,
                                            generator=torch.Generator().manual_seed(3))}
        return NegGuideNegToMe.execute(model, 0.9, -1.0, 0.0, 1.0, mode, reference_latent=reference).args[0]
    return NegGuideNegToMe.execute(model, 0.9, -1.0, 0.0, 1.0, mode).args[0]


def sample(entry, model, cfg):
    return nodes.common_ksampler(model, 7, 2, cfg, "euler", "normal", entry.encode("a blue circle on grass"),
                                 entry.encode(""), entry.empty_latent(64, 64, 2))[0]["samples"]


@pytest.mark.parametrize("mode", ["batch diversity", "reference image"])
@pytest.mark.parametrize("cfg", [1.0, 4.0])
@pytest.mark.parametrize("name", ARCHS)
def test_negtome_and_vsf_give_the_same_result_in_either_order(name, cfg, mode):
    entry = zoo.build(name)
    negtome_then_vsf = sample(entry, vsf(entry, negtome(entry, entry.model, mode)), cfg)
    vsf_then_negtome = sample(entry, negtome(entry, vsf(entry, entry.model), mode), cfg)
    torch.testing.assert_close(negtome_then_vsf, vsf_then_negtome, rtol=0, atol=0)
    for alone in (vsf(entry, entry.model), negtome(entry, entry.model, mode)):
        assert not torch.allclose(vsf_then_negtome, sample(entry, alone, cfg), atol=1e-4)
