"""NegGuideNegToMe's reference_mask input: what a ComfyUI MASK can be ([H, W] or [B, H, W]) is
accepted; any other shape (e.g. a 1-D [N] or [W] tensor, which used to crash inside torch at
sampling time) is refused when the node runs, with a ValueError naming the shape."""

import re

import pytest
import torch

import nodes

from negguide.harness import zoo
from negguide.nodes.negtome import NegGuideNegToMe

PROMPT = "a blue circle on grass"


def reference_patch(entry, mask):
    reference = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    return NegGuideNegToMe.execute(entry.model, 1.0, 0.0, 0.0, 1.0, "reference image", reference_latent=reference,
                                   reference_mask=mask, seed=5).args[0]


def sample(entry, model):
    return nodes.common_ksampler(model, 7, 2, 1.0, "euler", "normal", entry.encode(PROMPT), entry.encode(""),
                                 entry.empty_latent(64, 64, 2))[0]["samples"]


def half_mask(*batch):
    mask = torch.zeros(*batch, 64, 64)
    mask[..., :32] = 1.0
    return mask


def test_mask_of_height_width_and_of_a_batch_is_the_same_mask():
    entry = zoo.build("sd15")
    flat = sample(entry, reference_patch(entry, half_mask()))
    batched = sample(entry, reference_patch(entry, half_mask(1)))
    assert flat.shape[0] == 2 and torch.isfinite(flat).all()
    torch.testing.assert_close(batched, flat)
    assert not torch.allclose(sample(entry, reference_patch(entry, torch.ones(64, 64))), flat)  # the mask acts
    # a batch of masks: the first one is used (as for the reference itself)
    several = torch.stack([half_mask(), torch.ones(64, 64)])
    torch.testing.assert_close(sample(entry, reference_patch(entry, several)), flat)


@pytest.mark.parametrize("shape", [(4096,), (64,), (1, 1, 64, 64), (2, 1, 64, 64), (), (0, 64, 64), (64, 0)],
                         ids=["N", "W", "B1HW", "B2HW", "scalar", "empty-batch", "empty-width"])
def test_other_mask_shapes_are_refused_with_the_shape(shape):
    entry = zoo.build("sd15")
    expected = re.escape(f"reference_mask has shape {tuple(shape)}; expected a MASK [height, width] or "
                         "[batch, height, width]")
    with pytest.raises(ValueError, match=expected):
        reference_patch(entry, torch.ones(shape))
