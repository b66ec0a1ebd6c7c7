// Face-diffuser's frontend extension: saved graphs keep their meaning across versions.
//
// * Before a graph is configured, every Face-diffuser node saved by an earlier version (or on
//   a ComfyUI with other dynamic inputs) is upgraded to this ComfyUI's layout (migrate.js).
// * Every pack node saves the names of its widget values (WIDGETS_PROPERTY), so a later
//   version reads them by name even from an exported graph or a PNG.
// * SNF Settings in hard mode keeps the temperature it was saved with and gives it back when
//   the node is switched to soft mode (on hosts whose soft mode adds the widget).
import { app } from "../../scripts/app.js";
import {
  PEOPLE_NODES,
  SNF_SETTINGS,
  TEMPERATURE_PROPERTY,
  WIDGETS_PROPERTY,
  hostFeatures,
  migrateGraph,
} from "./migrate.js";

const nodeDefs = {};
let host = null;

function keepTemperature(node) {
  const mode = node.widgets?.find((w) => w.name === "mode");
  if (!mode || mode.facediffuserWrapped) return;
  mode.facediffuserWrapped = true;
  const original = mode.callback;
  mode.callback = function (value, ...rest) {
    const widget = node.widgets?.find((w) => w.name === "mode.temperature");
    if (value === "hard" && widget) {
      node.properties[TEMPERATURE_PROPERTY] = widget.value;
    }
    const result = original?.call(this, value, ...rest);
    const saved = node.properties?.[TEMPERATURE_PROPERTY];
    const restored = node.widgets?.find((w) => w.name === "mode.temperature");
    if (value === "soft" && restored && saved !== undefined) {
      restored.value = saved;
      delete node.properties[TEMPERATURE_PROPERTY];
    }
    return result;
  };
}

app.registerExtension({
  name: "facediffuser.compatibility",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData?.name).startsWith("FaceDiffuser")) return;
    if (nodeData.name === SNF_SETTINGS || PEOPLE_NODES.includes(nodeData.name)) {
      nodeDefs[nodeData.name] = nodeData;
      host = null;
    }
    const onSerialize = nodeType.prototype.onSerialize;
    nodeType.prototype.onSerialize = function (saved) {
      onSerialize?.call(this, saved);
      if (Array.isArray(saved.widgets_values) && this.widgets?.length) {
        saved.properties = saved.properties || {};
        saved.properties[WIDGETS_PROPERTY] = this.widgets.map((w) => w.name);
      }
    };
  },

  async beforeConfigureGraph(graphData) {
    host = host || hostFeatures(nodeDefs);
    const changes = migrateGraph(graphData, host);
    if (changes.length) {
      console.info(`[Face-diffuser] upgraded the saved graph:\n  ${changes.join("\n  ")}`);
    }
  },

  nodeCreated(node) {
    if (node?.comfyClass === SNF_SETTINGS && hostFeatures(nodeDefs).dynamicMode) {
      keepTemperature(node);
    }
  },
});
