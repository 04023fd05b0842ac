"""The part of a sampling schedule where a method acts, shared by the window-gated nodes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SigmaWindow:
    """Active while sigma_end <= sigma <= sigma_start (sigma falls as sampling goes on)."""

    sigma_start: float
    sigma_end: float

    @classmethod
    def from_percents(cls, model, start_percent: float, end_percent: float, method: str) -> "SigmaWindow":
        """The window of ``model`` (a ModelPatcher) between two fractions of its schedule
        (0 = first step, 1 = last), the way ComfyUI's own start/end_percent inputs work."""
        if start_percent > end_percent:
            raise ValueError(f"{method}: start_percent ({start_percent}) is after end_percent ({end_percent}).")
        model_sampling = model.get_model_object("model_sampling")
        return cls(float(model_sampling.percent_to_sigma(start_percent)), float(model_sampling.percent_to_sigma(end_percent)))

    def __contains__(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start
