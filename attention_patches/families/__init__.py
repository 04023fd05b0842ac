"""Per-family token-layout adapters for families whose attention calls need more than the
plain ``Architecture`` record (padding, text-only or image-only calls). Comfy-free."""
