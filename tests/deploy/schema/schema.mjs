// Two independent schema checks of Kubernetes objects, both generated from
// the Kubernetes OpenAPI definitions by kubernetes-models:
//
//  1. JSON schema (kubernetes-models' .validate(), ajv): types, enums,
//     formats, required fields. It ignores properties it does not know.
//  2. TypeScript: each object becomes an object literal assigned to its
//     model interface (`const o: IDaemonSet = {...}`) and is type-checked
//     in memory. Excess-property checking rejects every unknown field at any
//     depth (a typo such as `imagePullPolicyy` that kubectl --validate=strict
//     or the API server would refuse), and missing required fields fail too.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

// "apps/v1" + "DaemonSet" -> "kubernetes-models/apps/v1/DaemonSet"
function modelPath(doc) {
  if (typeof doc.apiVersion !== "string" || typeof doc.kind !== "string") return null;
  if (!/^[A-Za-z0-9.\-/]+$/.test(doc.apiVersion) || !/^[A-Za-z0-9]+$/.test(doc.kind)) return null;
  return `kubernetes-models/${doc.apiVersion}/${doc.kind}`;
}

// Returns a list of error strings for one object.
export function jsonSchemaErrors(doc) {
  const path = modelPath(doc);
  if (!path) return ["apiVersion and kind must be set"];
  let Model;
  try {
    Model = require(path)[doc.kind];
  } catch {
    return [`no schema for ${doc.apiVersion} ${doc.kind} (unknown apiVersion/kind)`];
  }
  if (typeof Model !== "function") return [`no schema for ${doc.apiVersion} ${doc.kind}`];
  try {
    new Model(doc).validate();
    return [];
  } catch (e) {
    if (Array.isArray(e.errors)) {
      return e.errors.map((x) => {
        const where = x.instancePath || "/";
        const extra = x.params?.allowedValues ? ` (${x.params.allowedValues.join(", ")})` : "";
        return `schema: ${where}: ${x.message}${extra}`;
      });
    }
    return [`schema: ${e.message}`];
  }
}

// Type-checks all objects in one TypeScript program. Returns a Map from
// object position to a list of error strings.
export function typeErrors(docs) {
  const result = new Map();
  const files = new Map(); // virtual file name -> { text, pos }
  docs.forEach((doc, pos) => {
    const path = modelPath(doc);
    if (!path) return; // reported by jsonSchemaErrors
    const name = join(here, "__generated__", `object${pos}.ts`);
    const text =
      `import type { I${doc.kind} } from "${path}";\n` +
      `export const object: I${doc.kind} = ${JSON.stringify(doc, null, 2)};\n`;
    files.set(name, { text, pos });
  });
  if (files.size === 0) return result;

  const options = {
    noEmit: true,
    strict: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const base = { fileExists: host.fileExists, readFile: host.readFile, getSourceFile: host.getSourceFile };
  host.fileExists = (f) => files.has(f) || base.fileExists.call(host, f);
  host.readFile = (f) => (files.has(f) ? files.get(f).text : base.readFile.call(host, f));
  host.getSourceFile = (f, lang, onError, create) =>
    files.has(f)
      ? ts.createSourceFile(f, files.get(f).text, lang, true)
      : base.getSourceFile.call(host, f, lang, onError, create);

  const program = ts.createProgram([...files.keys()], options, host);
  for (const d of ts.getPreEmitDiagnostics(program)) {
    // Long inferred literal types say nothing; keep the message readable.
    const msg = ts
      .flattenDiagnosticMessageText(d.messageText, "\n    ")
      .replace(/'\{[^']{80,}'/g, "'{…}'");
    const entry = d.file && files.get(d.file.fileName);
    if (!entry) {
      // A problem outside the generated files (models, compiler setup).
      result.set(-1, [...(result.get(-1) ?? []), `typescript: ${msg}`]);
      continue;
    }
    const { line } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
    const lines = entry.text.split("\n");
    const near = (lines[line] ?? "").trim();
    result.set(entry.pos, [...(result.get(entry.pos) ?? []), `types: ${msg}\n    at: ${near}`]);
  }
  return result;
}
