"""How VSF extends the attention mask a model call is given (FamilyAdapter.attention_mask_with_negative):
the tokens it appends to the text are attended, everything the mask said before stays where it was."""

import pytest
import torch

from negguide.attention_patches.families import ADAPTERS
from negguide.attention_patches.families.flux import FLUX, FLUX2

ALL_ADAPTERS = [ADAPTERS[family] for family in sorted(ADAPTERS)]


@pytest.mark.parametrize("adapter", ALL_ADAPTERS, ids=lambda a: a.family)
@pytest.mark.parametrize("dtype, keep", [(torch.int64, 1), (torch.bool, True), (torch.float32, 0.0)])
def test_a_text_mask_gets_the_appended_tokens_as_attended(adapter, dtype, keep):
    """[B, T] text masks (Qwen-Image, Hunyuan Video, Lumina/Z-Image): 1 / True keep a token, and a
    float mask is an additive bias, so N's entries are 1, True or 0; P's entries are unchanged."""
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]]).to(dtype)
    if dtype.is_floating_point:
        mask = (mask - 1) * 1e4  # the additive reading: 0 keep, very negative drop
    extended = adapter.attention_mask_with_negative(mask, 3, 2, "NegGuideVSF")
    assert extended.dtype == mask.dtype and extended.shape == (2, 5)
    assert torch.equal(extended[:, :3], mask)
    assert torch.equal(extended[:, 3:], torch.full((2, 2), keep, dtype=dtype))


@pytest.mark.parametrize("adapter", [FLUX, FLUX2], ids=lambda a: a.family)
def test_a_flux_joint_mask_opens_the_negatives_rows_and_columns(adapter):
    """The square [B, T + I, T + I] bias of Flux (Redux's attn_bias): N's 2 rows and columns are
    inserted after the T text tokens with bias 0; the four quadrants of the old mask keep their values."""
    text, image, added = 3, 4, 2
    old = torch.randn(2, text + image, text + image)
    new = adapter.attention_mask_with_negative(old, text, added, "NegGuideVSF")
    assert new.shape == (2, text + added + image, text + added + image)
    after = slice(text + added, None)
    torch.testing.assert_close(new[:, :text, :text], old[:, :text, :text], rtol=0, atol=0)
    torch.testing.assert_close(new[:, :text, after], old[:, :text, text:], rtol=0, atol=0)
    torch.testing.assert_close(new[:, after, :text], old[:, text:, :text], rtol=0, atol=0)
    torch.testing.assert_close(new[:, after, after], old[:, text:, text:], rtol=0, atol=0)
    assert torch.all(new[:, text:text + added, :] == 0) and torch.all(new[:, :, text:text + added] == 0)


@pytest.mark.parametrize("adapter", ALL_ADAPTERS, ids=lambda a: a.family)
def test_a_mask_of_another_shape_is_refused_with_the_reason(adapter):
    with pytest.raises(ValueError, match=rf"NegGuideVSF: this {adapter.family} model was given an attention mask of shape \[2, 5\]"):
        adapter.attention_mask_with_negative(torch.ones(2, 5, dtype=torch.bool), 3, 2, "NegGuideVSF")
