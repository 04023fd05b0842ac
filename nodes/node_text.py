"""Text a NegGuide node shows on itself in the ComfyUI frontend (web/js/negguide_node_text.js).

ComfyUI's frontend renders a node's UI text output ({"text": [...]}) only for core's PreviewAny and
SaveText; the pack's extension shows it on every NegGuide node. Two channels:

* ``node_text(...)``: known when the node executes (VSF with an empty negative): return it as the
  node's UI output, ``io.NodeOutput(model, ui=node_text(...))``; ComfyUI sends it in the
  "executed" message (and again when the node's output comes from the cache).
* ``send_node_text(node_id, text)``: known only later, while sampling (NegToMe's batch size is only
  seen by the model): a "negguide.node_text" message to the client that queued the prompt. Without
  a running server (in-process use) it does nothing and returns False.
"""

from __future__ import annotations

import sys

from comfy_api.latest import ui

EVENT = "negguide.node_text"


def node_text(*lines: str) -> ui.PreviewText:
    return ui.PreviewText("\n".join(lines))


def _prompt_server():
    module = sys.modules.get("server")  # ComfyUI's server.py, imported by main.py; never imported here
    return getattr(getattr(module, "PromptServer", None), "instance", None)


def current_prompt_id() -> str | None:
    """The id of the prompt the server is running, or None without a server."""
    return getattr(_prompt_server(), "last_prompt_id", None)


def send_node_text(node_id: str | None, text: str) -> bool:
    """Show ``text`` on node ``node_id`` (its UNIQUE_ID) in the frontend that queued the prompt."""
    server = _prompt_server()
    if server is None or node_id is None:
        return False
    server.send_sync(EVENT, {"node": str(node_id), "text": [text], "prompt_id": current_prompt_id()},
                     getattr(server, "client_id", None))
    return True
