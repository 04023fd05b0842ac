"""Attention-level math and per-architecture token-layout adapters (no ComfyUI import)."""
