// Saved Face-diffuser graphs of every released version, upgraded on load to the form this
// ComfyUI's nodes have. Pure functions on the saved JSON (no frontend import), so the unit
// suite runs them in node (tests/test_web_migrate.py) and the browser suite in the real
// frontend. docs/compatibility.md says what each version's graph becomes.
//
// Values are read by their names wherever the saved graph names them (this version's
// `facediffuser.widgets` property; the frontend's `widget` entries, which Save keeps and
// Export drops) and otherwise by the layout the pack shipped for that node in the version
// that saved it; they are never re-read by position against the current layout.

export const SNF_SETTINGS = "FaceDiffuserSNFSettings";
export const PEOPLE_NODES = ["FaceDiffuserSubjectEncode", "FaceDiffuserIdentitySimilarity"];
// where a hard-mode node keeps the temperature it was saved with (the widget exists only in
// soft mode on hosts with dynamic inputs); restored when the node is switched to soft
export const TEMPERATURE_PROPERTY = "facediffuser.temperature";

const PERSON = /^(?:people\.)?person_([1-9])$/;
const DYNAMIC_TEMPERATURE = "mode.temperature";

// Since this version every pack node saves the names of its widget values (the frontend's
// own widget entries are dropped from exported graphs and PNG metadata).
export const WIDGETS_PROPERTY = "facediffuser.widgets";

// The layouts SNF Settings had before that, for a node saved without names. 0.1 as first
// released (V1 nodes, no Registry id on its nodes) saved [mode, temperature, kernel_size] in
// both modes. The V3 nodes (whose shipped nodes carry properties.cnr_id) saved [mode,
// kernel_size] in hard mode and [mode, mode.temperature, kernel_size] in soft mode where the
// host has dynamic inputs (ComfyUI 0.8.0+), and [mode, kernel_size, temperature] on 0.3.48.
const V1_SNF = { 3: ["mode", "temperature", "kernel_size"], 2: ["mode", "kernel_size"] };
const V3_SNF_DYNAMIC = { 3: ["mode", "temperature", "kernel_size"], 2: ["mode", "kernel_size"] };
const V3_SNF_FIXED = { 3: ["mode", "kernel_size", "temperature"] };

const isKernel = (v) => Number.isInteger(v) && v >= 1 && v <= 15;

function unnamedSnfLayout(node, values) {
  if (node.properties?.cnr_id !== "facediffuser") return V1_SNF[values.length];
  if (values.length !== 3) return V3_SNF_DYNAMIC[values.length];
  // three values from the V3 nodes: a hard-mode node had them only on a host without
  // dynamic inputs; a soft one on either, told apart by which value can be a kernel size
  if (values[0] === "hard") return V3_SNF_FIXED[3];
  return isKernel(values[1]) && !isKernel(values[2]) ? V3_SNF_FIXED[3] : V3_SNF_DYNAMIC[3];
}

/** Host features read from the node definitions (/object_info) of this ComfyUI. */
export function hostFeatures(nodeDefs) {
  const snf = nodeDefs?.[SNF_SETTINGS]?.input?.required?.mode;
  const people = nodeDefs?.[PEOPLE_NODES[0]]?.input?.required?.people;
  return {
    dynamicMode: Array.isArray(snf) && snf[0] === "COMFY_DYNAMICCOMBO_V3",
    peopleList: Array.isArray(people) && people[0] === "COMFY_AUTOGROW_V3",
  };
}

function linkTarget(link) {
  return Array.isArray(link)
    ? { id: link[0], node: link[3], slot: link[4] }
    : { id: link.id, node: link.target_id, slot: link.target_slot };
}

function setLinkSlot(link, slot) {
  if (Array.isArray(link)) link[4] = slot;
  else link.target_slot = slot;
}

/**
 * Replace `node.inputs` by `kept` (a subset of its entries, in order) and move every link
 * that ends on this node to its input's new index.
 */
function keepInputs(node, kept, links) {
  const newIndex = new Map();
  node.inputs.forEach((input, i) => {
    const at = kept.indexOf(input);
    if (at >= 0) newIndex.set(i, at);
  });
  for (const link of links || []) {
    if (!link) continue;
    const target = linkTarget(link);
    if (target.node === node.id && newIndex.has(target.slot)) {
      setLinkSlot(link, newIndex.get(target.slot));
    }
  }
  node.inputs = kept;
}

/** {mode, temperature, kernel_size} of a saved SNF Settings node, or null if unknown. */
export function readSnfSettings(node) {
  const values = node.widgets_values;
  if (!Array.isArray(values)) return null;
  const plain = (name) => (name === DYNAMIC_TEMPERATURE ? "temperature" : name);
  let names = node.properties?.[WIDGETS_PROPERTY];
  if (!Array.isArray(names) || names.length !== values.length) {
    names = (node.inputs || []).filter((input) => input?.widget?.name).map((i) => i.widget.name);
  }
  if (names.length !== values.length) names = unnamedSnfLayout(node, values);
  if (!names) return null;
  names = names.map(plain);
  const read = {};
  names.forEach((name, i) => (read[name] = values[i]));
  if (read.mode !== "hard" && read.mode !== "soft") return null;
  if (read.temperature === undefined && node.properties?.[TEMPERATURE_PROPERTY] !== undefined) {
    read.temperature = node.properties[TEMPERATURE_PROPERTY];
  }
  return read;
}

/** SNF Settings in this host's layout; returns what changed (empty: nothing). */
export function migrateSnfSettings(node, host, links) {
  const read = readSnfSettings(node);
  if (!read) return [];
  const snapshot = () =>
    JSON.stringify([node.widgets_values, node.properties?.[TEMPERATURE_PROPERTY]]);
  const before = snapshot();
  const { mode, kernel_size: kernel } = read;
  const temperature = read.temperature;
  node.properties = node.properties || {};
  if (host.dynamicMode) {
    if (mode === "soft") {
      node.widgets_values = [mode, temperature ?? 1.0, kernel];
      node.properties[WIDGETS_PROPERTY] = ["mode", DYNAMIC_TEMPERATURE, "kernel_size"];
      delete node.properties[TEMPERATURE_PROPERTY];
    } else {
      node.widgets_values = [mode, kernel];
      node.properties[WIDGETS_PROPERTY] = ["mode", "kernel_size"];
      if (temperature !== undefined) node.properties[TEMPERATURE_PROPERTY] = temperature;
    }
  } else {
    node.widgets_values = [mode, kernel, temperature ?? 1.0];
    node.properties[WIDGETS_PROPERTY] = ["mode", "kernel_size", "temperature"];
    delete node.properties[TEMPERATURE_PROPERTY];
  }
  // widget entries are laid out anew by the frontend; keep only those a link feeds,
  // named as this host names them
  const hostTemperature = host.dynamicMode ? DYNAMIC_TEMPERATURE : "temperature";
  const kept = (node.inputs || []).filter((input) => !input.widget || input.link != null);
  for (const input of kept) {
    if (input.widget && /^(mode\.)?temperature$/.test(input.widget.name)) {
      input.name = input.widget.name = hostTemperature;
    }
  }
  if (node.inputs) keepInputs(node, kept, links);
  const after = snapshot();
  return before === after ? [] : [`${SNF_SETTINGS} ${node.id}: widgets ${after}`];
}

/** The person sockets of Subject Encode / Identity Similarity in this host's naming. */
export function migratePeople(node, host, links) {
  if (!Array.isArray(node.inputs)) return [];
  const changes = [];
  const people = node.inputs.filter((input) => PERSON.test(input?.name ?? ""));
  if (!people.length) return [];
  const number = (input) => Number(PERSON.exec(input.name)[1]);
  const lastLinked = Math.max(0, ...people.filter((i) => i.link != null).map(number));
  for (const input of people) {
    const n = PERSON.exec(input.name)[1];
    const name = host.peopleList ? `people.person_${n}` : `person_${n}`;
    const label = host.peopleList ? `person_${n}` : undefined;
    if (input.name !== name || input.label !== label) {
      changes.push(`${node.type} ${node.id}: ${input.name} -> ${name}`);
      input.name = name;
      if (label === undefined) delete input.label;
      else input.label = label;
    }
  }
  // an empty socket whose person is also connected under the other naming (a graph saved
  // on a host that added its own sockets next to the saved ones) goes; so do, in a growing
  // list, the empty sockets after the last connected person (the frontend adds the next
  // one itself). Fixed sockets are otherwise kept: the node definition has them anyway.
  const linkedNames = new Set(people.filter((i) => i.link != null).map((i) => i.name));
  const dropped = people.filter(
    (input) =>
      input.link == null &&
      (linkedNames.has(input.name) || (host.peopleList && number(input) > lastLinked)),
  );
  if (dropped.length) {
    keepInputs(
      node,
      node.inputs.filter((input) => !dropped.includes(input)),
      links,
    );
    changes.push(`${node.type} ${node.id}: ${dropped.length} empty person socket(s) removed`);
  }
  return changes;
}

function migrateNodes(nodes, links, host) {
  const changes = [];
  for (const node of nodes || []) {
    if (!node) continue;
    if (node.type === SNF_SETTINGS) changes.push(...migrateSnfSettings(node, host, links));
    if (PEOPLE_NODES.includes(node.type)) changes.push(...migratePeople(node, host, links));
  }
  return changes;
}

/**
 * Upgrade a saved graph (the workflow JSON, changed in place) to this host's node layouts,
 * subgraph definitions included. Returns one line per change (empty: nothing to do).
 */
export function migrateGraph(graph, host) {
  if (!graph || typeof graph !== "object") return [];
  const changes = migrateNodes(graph.nodes, graph.links, host);
  for (const subgraph of graph.definitions?.subgraphs || []) {
    changes.push(...migrateNodes(subgraph.nodes, subgraph.links, host));
  }
  return changes;
}
