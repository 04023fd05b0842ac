// NegGuide: show a node's text on the node after a run (a no-op warning, a caption).
//
// A node's UI output {"text": [...]} reaches the frontend in the "executed" message, and the
// frontend calls node.onExecuted(output) for every node; but it renders that text only for core's
// PreviewAny and SaveText (their extensions add a text preview widget). Other nodes' text is
// dropped silently. This extension does the same for every NegGuide node, once for all of them:
// * UI text returned when the node executes (nodes/node_text.py `node_text`);
// * text the server sends later, while sampling ("negguide.node_text" messages from
//   nodes/node_text.py `send_node_text`, e.g. NegToMe in batch-diversity mode with a batch of 1).
// A new run clears the text of the nodes it is about to execute.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const PREFIX = "NegGuide";
const EVENT = "negguide.node_text";
const FALLBACK_WIDGET = "negguide_text";

function textWidget(node) {
  return node.widgets?.find((w) => w.name === "preview_text" || w.name === FALLBACK_WIDGET);
}

function showText(node, text) {
  const value = Array.isArray(text) ? text.join("\n\n") : String(text ?? "");
  let widget = textWidget(node);
  if (!widget && !value) return;
  const core = window.comfyAPI?.textPreviewWidgets; // frontend >= 1.3x: core's text preview widget
  if (!widget) {
    if (core?.addTextPreviewWidgets) {
      core.addTextPreviewWidgets(node);
    } else {
      const ComfyWidgets = window.comfyAPI?.widgets?.ComfyWidgets;
      const added = ComfyWidgets.STRING(node, FALLBACK_WIDGET, ["STRING", { multiline: true }], app).widget;
      added.serialize = false;
      added.options.serialize = false;
      if (added.element) added.element.readOnly = true;
    }
    widget = textWidget(node);
    node.setSize([Math.max(node.size[0], 320), Math.max(node.size[1], node.computeSize()[1])]);
  }
  if (core?.updateTextPreviewWidgets && widget.name === "preview_text") {
    core.updateTextPreviewWidgets(node, { text: value });
  } else {
    widget.value = value;
  }
  node.setDirtyCanvas?.(true, true);
}

function findNode(executionId) {
  // "12" on the root graph; "5:12" is node 12 inside the subgraph of node 5.
  let graph = app.rootGraph ?? app.graph;
  let node = null;
  for (const part of String(executionId).split(":")) {
    node = graph?.getNodeById(part) ?? null;
    graph = node?.subgraph;
  }
  return node;
}

app.registerExtension({
  name: "NegGuide.NodeText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name?.startsWith(PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      if (output?.text !== undefined) showText(this, output.text);
    };
  },
  async setup() {
    api.addEventListener(EVENT, ({ detail }) => {
      const node = findNode(detail.node);
      if (node) showText(node, detail.text);
    });
    api.addEventListener("execution_start", () => {
      for (const node of (app.rootGraph ?? app.graph)?.nodes ?? []) {
        if (node.type?.startsWith(PREFIX) && textWidget(node)) showText(node, "");
      }
    });
  },
});
