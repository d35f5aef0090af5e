// Negative cases: each takes the rendered manifests and introduces exactly
// one defect that validate.mjs must reject, with an error matching
// `expect` (so a case cannot pass by failing for some unrelated reason).
import { Document } from "yaml";
import { loadManifests } from "./load.mjs";

const daemonSet = (objs) => objs.find((o) => o.kind === "DaemonSet");
const podSpec = (objs) => daemonSet(objs).spec.template.spec;
const container = (objs, name) => podSpec(objs).containers.find((c) => c.name === name);

export const CASES = {
  "unknown-field": {
    what: "typo'd field in a container (imagePullPolicyy)",
    expect: /does not exist in type[\s\S]*imagePullPolicyy|imagePullPolicyy[\s\S]*does not exist/,
    objects: (objs) => {
      podSpec(objs).containers[0].imagePullPolicyy = "IfNotPresent";
    },
  },
  "no-selector": {
    what: "DaemonSet without spec.selector",
    expect: /required property selector/,
    objects: (objs) => {
      delete daemonSet(objs).spec.selector;
    },
  },
  "wrong-type": {
    what: "string where the schema wants an integer",
    expect: /schema: \/spec\/template\/spec\/terminationGracePeriodSeconds: must be integer/,
    objects: (objs) => {
      podSpec(objs).terminationGracePeriodSeconds = "sixty";
    },
  },
  "yaml11-boolean": {
    what: "unquoted `on` in ConfigMap data (a boolean in YAML 1.1, as kubectl reads it)",
    expect: /schema: \/data\/RINGMESH_FASTPATH: must be string/,
    text: (text) => {
      const out = text.replace(/RINGMESH_FASTPATH: "on"/, "RINGMESH_FASTPATH: on");
      if (out === text) throw new Error("RINGMESH_FASTPATH: \"on\" not found in the rendered text");
      return out;
    },
  },
  "max-unavailable": {
    what: "maxUnavailable 1",
    expect: /maxUnavailable must be 0/,
    objects: (objs) => {
      daemonSet(objs).spec.updateStrategy.rollingUpdate.maxUnavailable = 1;
    },
  },
  "no-priority": {
    what: "priorityClassName removed",
    expect: /priorityClassName must be system-node-critical/,
    objects: (objs) => {
      delete podSpec(objs).priorityClassName;
    },
  },
  "privileged-proxy": {
    what: "privileged: true on the proxy",
    expect: /container proxy: privileged: true is not allowed/,
    objects: (objs) => {
      container(objs, "proxy").securityContext.privileged = true;
    },
  },
  "no-drop-all": {
    what: "agent without capabilities.drop ALL",
    expect: /container agent: capabilities.drop must be \[ALL\]/,
    objects: (objs) => {
      delete container(objs, "agent").securityContext.capabilities.drop;
    },
  },
  "no-seccomp": {
    what: "pod-level seccomp profile removed (the agent relies on it)",
    expect: /container agent: no seccomp profile/,
    objects: (objs) => {
      delete podSpec(objs).securityContext.seccompProfile;
    },
  },
  "no-liveness": {
    what: "proxy without livenessProbe",
    expect: /container proxy: livenessProbe is required/,
    objects: (objs) => {
      delete container(objs, "proxy").livenessProbe;
    },
  },
  "undefined-var": {
    what: "$(VAR) in args that no env or ConfigMap key defines",
    expect: /\$\(RINGMESH_NOPE\) in command\/args is not defined/,
    objects: (objs) => {
      container(objs, "agent").args.push("--nope=$(RINGMESH_NOPE)");
    },
  },
  "profile-not-installed": {
    what: "Localhost seccomp profile that no init container installs",
    expect: /no init container installs its Localhost seccomp profile/,
    objects: (objs) => {
      const spec = podSpec(objs);
      spec.initContainers = spec.initContainers.filter((c) => c.name !== "install-seccomp");
    },
  },
  "profile-no-io-uring": {
    what: "seccomp profile without io_uring",
    expect: /io_uring_setup must be allowed/,
    objects: (objs) => {
      const cm = objs.find((o) => o.kind === "ConfigMap" && o.data?.["ringmesh.json"]);
      const p = JSON.parse(cm.data["ringmesh.json"]);
      p.syscalls = p.syscalls.filter((s) => !s.names.some((n) => n.startsWith("io_uring")));
      cm.data["ringmesh.json"] = JSON.stringify(p, null, 2);
    },
  },
};

export function mutate(name, text) {
  const c = CASES[name];
  if (!c) throw new Error(`unknown case ${name}; see --cases`);
  if (c.text) return c.text(text);
  const { objects, errors } = loadManifests(text, "input");
  if (errors.length) throw new Error(errors.join("\n"));
  const docs = objects.map((o) => o.doc);
  c.objects(docs);
  // Written back as YAML 1.1, so strings such as "on" stay quoted.
  return docs.map((d) => new Document(d, { version: "1.1" }).toString()).join("---\n");
}
