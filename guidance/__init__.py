"""Guidance math of each method as plain, typed torch functions (no ComfyUI import)."""
