"""NegGuide: negative-guidance methods (VSF, NegToMe, DNG, DNS/auto-DNP) for ComfyUI.

ComfyUI loads this package as a custom node pack and calls ``comfy_entrypoint``. Importing the
package itself does nothing else: no ComfyUI import, no network, no global state, so the math in
``guidance/`` and ``attention_patches/`` can be imported and tested without a ComfyUI host.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import NegGuideExtension

    return NegGuideExtension()
