// Reads a multi-document manifest stream the way the API server's clients do:
// YAML 1.1 scalars (kubectl decodes with sigs.k8s.io/yaml, so an unquoted
// `on`, `yes` or `off` is a boolean, not a string), duplicate keys rejected.
import { parseAllDocuments } from "yaml";

// Returns { objects: [{ doc, label, index }], errors: [string] }.
export function loadManifests(text, source) {
  const objects = [];
  const errors = [];
  const docs = parseAllDocuments(text, { version: "1.1", uniqueKeys: true, prettyErrors: true });
  docs.forEach((d, index) => {
    for (const e of d.errors) errors.push(`${source}: document ${index + 1}: ${e.message}`);
    if (d.errors.length) return;
    const doc = d.toJS({ maxAliasCount: 0 });
    if (doc === null || doc === undefined) return;
    if (typeof doc !== "object" || Array.isArray(doc)) {
      errors.push(`${source}: document ${index + 1}: not a Kubernetes object`);
      return;
    }
    objects.push({ doc, index, label: labelOf(doc) });
  });
  return { objects, errors };
}

export function labelOf(doc) {
  const md = doc.metadata ?? {};
  const name = md.name ?? (md.generateName ? `${md.generateName}*` : "<no name>");
  return `${doc.kind ?? "<no kind>"} ${md.namespace ? md.namespace + "/" : ""}${name}`;
}
