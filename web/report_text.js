// vdtrack: show the text a vdtrack node returns in its `ui.text` (the TAP-Vid / DAVIS / comparison reports, the
// head-search table, preset summaries) inside the node, in a read-only text box, once the node has run.
// ComfyUI's frontend keeps `ui.text` of custom nodes in the execution message but draws it nowhere.
// Public frontend API only: app.registerExtension, nodeType.prototype.onExecuted, node.addDOMWidget.
import { app } from "../../scripts/app.js";

const CATEGORY = "vdtrack";          // every vdtrack node's category starts with this
const WIDGET = "vdtrack_report";     // the widget's name (never an input of the node, never serialised)

function reportWidget(node) {
    let widget = node.widgets?.find((w) => w.name === WIDGET);
    if (widget) return widget;
    const box = document.createElement("textarea");
    box.className = "comfy-multiline-input vdtrack-report";
    box.readOnly = true;
    box.spellcheck = false;
    box.style.fontFamily = "monospace";
    box.style.fontSize = "11px";
    box.style.whiteSpace = "pre";
    box.style.overflow = "auto";
    box.style.resize = "none";
    widget = node.addDOMWidget(WIDGET, "vdtrack_report", box, {
        getValue: () => box.value,
        setValue: (v) => { box.value = v ?? ""; },
        serialize: false,
        getMinHeight: () => 120,
    });
    widget.serialize = false;        // not sent with the prompt
    return widget;
}

function showText(node, lines) {
    const text = (Array.isArray(lines) ? lines : [lines]).filter((t) => t != null).join("\n");
    const widget = reportWidget(node);
    widget.element.dataset.nodeId = String(node.id);
    widget.element.value = text;
    const rows = Math.min(24, text.split("\n").length + 1);
    const [w, h] = node.computeSize();
    node.setSize([Math.max(node.size[0], w, 420), Math.max(node.size[1], h, h + rows * 13)]);
    node.setDirtyCanvas(true, true);
}

app.registerExtension({
    name: "vdtrack.reportText",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (!String(nodeData?.category ?? "").startsWith(CATEGORY)) return;
        const onExecuted = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (message) {
            const r = onExecuted?.apply(this, arguments);
            if (message?.text?.length) showText(this, message.text);
            return r;
        };
    },
});
