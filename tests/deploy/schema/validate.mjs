// Validates rendered Kubernetes manifests offline.
//
//   node validate.mjs FILE.yaml...     schema + types + ringmesh rules; one
//                                      line per object, errors indented;
//                                      exit 1 when anything fails
//   node validate.mjs --mutate CASE IN.yaml   print IN with one deliberate
//                                      defect (negative tests, see mutate.mjs)
//   node validate.mjs --negative IN.yaml [MORE.yaml...]   run every
//                                      negative case: each must be rejected
//                                      with its expected message
//   node validate.mjs --cases          list the negative cases
import { readFileSync } from "node:fs";
import { loadManifests } from "./load.mjs";
import { CASES, mutate } from "./mutate.mjs";
import { policyErrors } from "./policy.mjs";
import { jsonSchemaErrors, typeErrors } from "./schema.mjs";

function main(argv) {
  if (argv[0] === "--cases") {
    for (const [name, c] of Object.entries(CASES)) console.log(`${name}\t${c.what}`);
    return 0;
  }
  if (argv[0] === "--mutate") {
    if (argv.length !== 3) return usage();
    process.stdout.write(mutate(argv[1], readFileSync(argv[2], "utf8")));
    return 0;
  }
  if (argv[0] === "--negative") return negative(argv.slice(1));
  if (argv.length === 0 || argv.some((a) => a.startsWith("-"))) return usage();

  const texts = argv.map((f) => ({ name: f, text: readFileSync(f, "utf8") }));
  const { failed, lines } = validate(texts);
  for (const l of lines) console.log(l);
  return failed ? 1 : 0;
}

// Every negative case mutates the first file, validates it together with
// the others, and must be rejected with its expected message.
function negative(files) {
  if (files.length === 0) return usage();
  const texts = files.map((f) => ({ name: f, text: readFileSync(f, "utf8") }));
  let bad = 0;
  for (const [name, c] of Object.entries(CASES)) {
    let result;
    try {
      const mutated = { name: `${texts[0].name} (${name})`, text: mutate(name, texts[0].text) };
      result = validate([mutated, ...texts.slice(1)]);
    } catch (e) {
      console.log(`FAIL negative ${name}: could not build the case: ${e.message}`);
      bad++;
      continue;
    }
    const hit = result.lines.find((l) => c.expect.test(l));
    if (result.failed && hit) {
      console.log(`PASS negative ${name}: ${c.what} -> rejected: ${hit.trim().split("\n")[0]}`);
    } else {
      bad++;
      console.log(`FAIL negative ${name}: ${c.what} -> ${result.failed ? `rejected, but without ${c.expect}` : "accepted"}`);
      for (const l of result.lines.filter((l) => !l.startsWith("ok"))) console.log(`    ${l}`);
    }
  }
  return bad ? 1 : 0;
}

// Returns { failed, lines }: one line per object, errors indented below it.
function validate(texts) {
  const lines = [];
  let failed = false;
  const objects = [];
  for (const { name, text } of texts) {
    const { objects: objs, errors } = loadManifests(text, name);
    for (const e of errors) lines.push(`FAIL ${e}`);
    failed ||= errors.length > 0;
    objects.push(...objs);
  }
  if (objects.length === 0) return { failed: true, lines: [...lines, "FAIL no objects to validate"] };

  const perObject = objects.map((o) => jsonSchemaErrors(o.doc));
  const types = typeErrors(objects.map((o) => o.doc));
  types.forEach((errs, pos) => {
    if (pos >= 0) perObject[pos].push(...errs);
  });
  const policy = policyErrors(objects);
  objects.forEach((o, i) => {
    const errs = [...perObject[i], ...policy.filter((p) => p.label === o.label).map((p) => `rule: ${p.message}`)];
    lines.push(`${errs.length ? "FAIL" : "ok  "} ${o.doc.apiVersion} ${o.label}`);
    for (const e of errs) lines.push(`    ${e}`);
    failed ||= errs.length > 0;
  });
  const labels = new Set(objects.map((o) => o.label));
  for (const p of policy.filter((p) => !labels.has(p.label))) {
    lines.push(`FAIL ${p.label}`, `    rule: ${p.message}`);
    failed = true;
  }
  for (const e of types.get(-1) ?? []) {
    lines.push(`FAIL ${e}`);
    failed = true;
  }
  lines.push(failed ? `invalid: ${objects.length} objects checked` : `valid: ${objects.length} objects`);
  return { failed, lines };
}

function usage() {
  console.error("usage: node validate.mjs FILE.yaml... | --negative IN.yaml [MORE.yaml...] | --mutate CASE IN.yaml | --cases");
  return 2;
}

process.exitCode = main(process.argv.slice(2));
