// ringmesh's deployment rules, checked on the whole rendered set. Some
// restate API-server validation that no OpenAPI schema carries (the checks
// marked "API:"), the rest are this project's decisions, explained in
// deploy/daemonset/daemonset.yaml and docs/install.md.

const ALLOWED_CAPS = new Set(["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]);
const KUBELET_SECCOMP_DIR = "/var/lib/kubelet/seccomp";
const WELL_KNOWN_CONFIGMAPS = new Set(["kube-root-ca.crt"]); // published in every namespace
const IO_URING = ["io_uring_setup", "io_uring_enter", "io_uring_register"];
// Syscalls RuntimeDefault denies to a container without the matching
// capability; none may be allowed unconditionally by our profile.
const NEVER_UNCONDITIONAL = [
  "acct", "add_key", "chroot", "clock_settime", "delete_module", "finit_module", "fsmount", "fsopen",
  "init_module", "iopl", "ioperm", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
  "mount", "move_mount", "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
  "process_vm_readv", "process_vm_writev", "ptrace", "quotactl", "reboot", "request_key", "settimeofday",
  "swapoff", "swapon", "syslog", "umount", "umount2", "unshare", "userfaultfd",
];

function podTemplateOf(doc) {
  switch (doc.kind) {
    case "DaemonSet":
    case "Deployment":
    case "StatefulSet":
    case "ReplicaSet":
    case "Job":
      return doc.spec?.template;
    case "CronJob":
      return doc.spec?.jobTemplate?.spec?.template;
    case "Pod":
      return { metadata: doc.metadata, spec: doc.spec };
    default:
      return undefined;
  }
}

const isZero = (v) => v === 0 || v === "0" || v === "0%";

// Returns [{ label, message }].
export function policyErrors(objects) {
  const errors = [];
  const err = (o, message) => errors.push({ label: o.label, message });

  const byKind = (k) => objects.filter((o) => o.doc.kind === k);
  const configMaps = new Map(byKind("ConfigMap").map((o) => [`${o.doc.metadata?.namespace}/${o.doc.metadata?.name}`, o.doc]));
  const serviceAccounts = new Set(byKind("ServiceAccount").map((o) => `${o.doc.metadata?.namespace}/${o.doc.metadata?.name}`));
  const clusterRoles = new Set(byKind("ClusterRole").map((o) => o.doc.metadata?.name));

  // Object identity: no duplicates in the stream.
  const seen = new Set();
  for (const o of objects) {
    const md = o.doc.metadata ?? {};
    if (!md.name) continue; // generateName objects are unique by construction
    const key = `${o.doc.apiVersion}/${o.doc.kind}/${md.namespace ?? ""}/${md.name}`;
    if (seen.has(key)) err(o, "appears twice in the rendered output");
    seen.add(key);
  }

  // One image for everything, pinned to a tag or digest.
  const images = new Map();
  for (const o of objects) {
    const spec = podTemplateOf(o.doc)?.spec;
    for (const c of [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])]) {
      images.set(c.image, [...(images.get(c.image) ?? []), `${o.label} ${c.name}`]);
      if (typeof c.image !== "string" || !(/:[^/]+$/.test(c.image) || c.image.includes("@sha256:")))
        err(o, `container ${c.name}: image ${c.image} has no tag`);
      else if (c.image.endsWith(":latest")) err(o, `container ${c.name}: image must not be :latest`);
    }
  }
  if (images.size > 1) {
    const where = [...images].map(([img, users]) => `${img} (${users.join(", ")})`).join("; ");
    errors.push({ label: "images", message: `all containers must run the same image (the cleanup Job's tag follows kustomization.yaml newTag): ${where}` });
  }

  for (const o of objects) {
    const tmpl = podTemplateOf(o.doc);
    if (tmpl) checkPod(o, tmpl, err, { configMaps, serviceAccounts });
  }
  for (const o of byKind("DaemonSet")) checkDaemonSet(o, err);
  for (const o of byKind("ClusterRole")) checkClusterRole(o, err);
  for (const o of byKind("ClusterRoleBinding")) {
    const rr = o.doc.roleRef ?? {};
    if (rr.kind === "ClusterRole" && !clusterRoles.has(rr.name)) err(o, `roleRef: ClusterRole ${rr.name} is not in the rendered set`);
    for (const s of o.doc.subjects ?? []) {
      if (s.kind === "ServiceAccount" && !serviceAccounts.has(`${s.namespace}/${s.name}`))
        err(o, `subject ServiceAccount ${s.namespace}/${s.name} is not in the rendered set`);
    }
  }
  return errors;
}

function checkDaemonSet(o, err) {
  const spec = o.doc.spec ?? {};
  const pod = spec.template?.spec ?? {};
  const us = spec.updateStrategy ?? {};
  if (us.type !== "RollingUpdate") err(o, "updateStrategy.type must be RollingUpdate");
  const ru = us.rollingUpdate ?? {};
  if (!isZero(ru.maxUnavailable)) err(o, `updateStrategy.rollingUpdate.maxUnavailable must be 0 (a node must never be without its proxy), got ${JSON.stringify(ru.maxUnavailable)}`);
  if (ru.maxSurge === undefined || isZero(ru.maxSurge)) err(o, "updateStrategy.rollingUpdate.maxSurge must be at least 1 (with maxUnavailable 0 nothing could roll)");
  if (pod.priorityClassName !== "system-node-critical") err(o, `priorityClassName must be system-node-critical, got ${JSON.stringify(pod.priorityClassName)}`);
  if (pod.hostNetwork !== true) err(o, "hostNetwork must be true");
  if ((pod.terminationGracePeriodSeconds ?? 30) < 30) err(o, "terminationGracePeriodSeconds must leave the proxy at least 30s to drain");
  const sel = spec.selector?.matchLabels ?? {};
  const labels = spec.template?.metadata?.labels ?? {};
  if (Object.keys(sel).length === 0) err(o, "selector.matchLabels must not be empty");
  for (const [k, v] of Object.entries(sel)) {
    if (labels[k] !== v) err(o, `API: selector ${k}=${v} does not match the template labels`);
  }
  for (const c of pod.containers ?? []) {
    const nodeName = (c.env ?? []).find((e) => e.name === "NODE_NAME");
    if (nodeName?.valueFrom?.fieldRef?.fieldPath !== "spec.nodeName") err(o, `container ${c.name}: env NODE_NAME must come from fieldRef spec.nodeName`);
    if (pod.hostNetwork && (c.ports ?? []).length)
      err(o, `container ${c.name}: no ports on a hostNetwork DaemonSet (they become host ports and block the surge pod from scheduling)`);
  }
}

function checkClusterRole(o, err) {
  for (const r of o.doc.rules ?? []) {
    for (const v of r.verbs ?? []) if (!["get", "list", "watch"].includes(v)) err(o, `verb ${v} is not read-only`);
    for (const res of r.resources ?? []) {
      if (res === "*" || res === "secrets") err(o, `resource ${res} must not be granted`);
    }
    if ((r.apiGroups ?? []).includes("*")) err(o, "apiGroups * must not be granted");
  }
}

function checkPod(o, tmpl, err, { configMaps, serviceAccounts }) {
  const pod = tmpl.spec ?? {};
  const ns = o.doc.metadata?.namespace;
  const isDaemonSet = o.doc.kind === "DaemonSet";
  const init = pod.initContainers ?? [];
  const main = pod.containers ?? [];
  const all = [...init.map((c) => ({ c, isInit: true })), ...main.map((c) => ({ c, isInit: false }))];
  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));

  if (volumes.size !== (pod.volumes ?? []).length) err(o, "API: volume names must be unique");
  const names = all.map(({ c }) => c.name);
  if (new Set(names).size !== names.length) err(o, "API: container names must be unique across init and regular containers");

  if (pod.serviceAccountName && pod.serviceAccountName !== "default" && !serviceAccounts.has(`${ns}/${pod.serviceAccountName}`))
    err(o, `serviceAccountName ${pod.serviceAccountName} is not in the rendered set`);
  if (!(pod.tolerations ?? []).some((t) => t.operator === "Exists" && !t.key && !t.effect))
    err(o, "tolerations must include {operator: Exists} (every taint): ringmesh has to run on every node");

  const cmRef = (where, name) => {
    if (!WELL_KNOWN_CONFIGMAPS.has(name) && !configMaps.has(`${ns}/${name}`)) err(o, `${where}: ConfigMap ${name} is not in the rendered set`);
  };
  for (const v of pod.volumes ?? []) {
    if (v.configMap) cmRef(`volume ${v.name}`, v.configMap.name);
    for (const s of v.projected?.sources ?? []) if (s.configMap) cmRef(`volume ${v.name}`, s.configMap.name);
  }

  const podSeccomp = pod.securityContext?.seccompProfile;
  for (const { c, isInit } of all) {
    const what = `${isInit ? "init container" : "container"} ${c.name}`;
    const sc = c.securityContext ?? {};
    const privileged = sc.privileged === true;
    const mounts = c.volumeMounts ?? [];

    for (const m of mounts) {
      if (!volumes.has(m.name)) err(o, `${what}: volumeMount ${m.name} has no volume`);
      if (m.mountPropagation === "Bidirectional" && !privileged)
        err(o, `API: ${what}: Bidirectional mount propagation is only allowed in privileged containers`);
    }

    // Privilege: only a short-lived init step may be privileged, and only
    // for what needs it (Bidirectional propagation of the bpffs mount).
    if (privileged) {
      if (!isInit) err(o, `${what}: privileged: true is not allowed on a long-running container`);
      else if (!mounts.some((m) => m.mountPropagation === "Bidirectional") || mounts.length !== 1)
        err(o, `${what}: privileged: true is only allowed for an init step whose single mount needs Bidirectional propagation`);
    } else {
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) err(o, `${what}: capabilities.drop must be [ALL]`);
      if (sc.allowPrivilegeEscalation !== false) err(o, `${what}: allowPrivilegeEscalation must be false`);
      for (const cap of sc.capabilities?.add ?? []) {
        if (cap.startsWith("CAP_")) err(o, `${what}: capability ${cap}: write it without the CAP_ prefix`);
        else if (!ALLOWED_CAPS.has(cap)) err(o, `${what}: capability ${cap} is not one ringmesh needs`);
      }
      const profile = sc.seccompProfile ?? podSeccomp;
      if (!profile || !profile.type) err(o, `${what}: no seccomp profile (set RuntimeDefault or Localhost)`);
      else if (profile.type === "Unconfined") err(o, `${what}: seccomp profile must not be Unconfined`);
      else if (profile.type === "Localhost") checkLocalhostProfile(o, what, profile, pod, configMaps, err);
    }
    if (sc.readOnlyRootFilesystem !== true) err(o, `${what}: readOnlyRootFilesystem must be true`);

    const res = c.resources ?? {};
    if (res.requests?.cpu === undefined || res.requests?.memory === undefined) err(o, `${what}: resources.requests cpu and memory are required`);
    if (res.limits?.memory === undefined) err(o, `${what}: resources.limits.memory is required`);

    if (isInit) {
      if (c.readinessProbe || c.livenessProbe || c.startupProbe)
        if (c.restartPolicy !== "Always") err(o, `API: ${what}: init containers cannot have probes`);
    } else if (isDaemonSet) {
      if (!c.readinessProbe) err(o, `${what}: readinessProbe is required`);
      if (!c.livenessProbe) err(o, `${what}: livenessProbe is required`);
    }

    // $(VAR) in command/args must name a variable the container has, or
    // the kubelet passes the text through unexpanded.
    const known = new Set((c.env ?? []).map((e) => e.name));
    for (const e of c.env ?? []) if (e.valueFrom?.configMapKeyRef) cmRef(`${what} env ${e.name}`, e.valueFrom.configMapKeyRef.name);
    for (const ef of c.envFrom ?? []) {
      if (!ef.configMapRef) continue;
      cmRef(`${what} envFrom`, ef.configMapRef.name);
      const cm = configMaps.get(`${ns}/${ef.configMapRef.name}`);
      for (const k of Object.keys(cm?.data ?? {})) known.add((ef.prefix ?? "") + k);
    }
    for (const arg of [...(c.command ?? []), ...(c.args ?? [])]) {
      for (const m of String(arg).matchAll(/(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
        if (!known.has(m[1])) err(o, `${what}: $(${m[1]}) in command/args is not defined in env or envFrom`);
      }
    }
  }
}

// A Localhost profile must exist on the node before the container is
// created: some init container of the same pod has to write it to
// /var/lib/kubelet/seccomp/<localhostProfile>, from a ConfigMap key that
// holds a valid profile allowing io_uring.
function checkLocalhostProfile(o, what, profile, pod, configMaps, err) {
  const rel = profile.localhostProfile;
  if (!rel) return err(o, `${what}: Localhost seccomp profile needs localhostProfile`);
  const hostFile = `${KUBELET_SECCOMP_DIR}/${rel}`;
  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
  const ns = o.doc.metadata?.namespace;
  for (const ic of pod.initContainers ?? []) {
    const script = [...(ic.command ?? []), ...(ic.args ?? [])].join("\n");
    for (const m of ic.volumeMounts ?? []) {
      const hp = volumes.get(m.name)?.hostPath?.path?.replace(/\/+$/, "");
      if (!hp || !hostFile.startsWith(hp + "/")) continue;
      const inContainer = `${m.mountPath.replace(/\/+$/, "")}/${hostFile.slice(hp.length + 1)}`;
      if (!script.includes(inContainer)) continue;
      // Found the installer; check what it installs.
      const base = rel.split("/").pop();
      const src = (ic.volumeMounts ?? []).map((vm) => volumes.get(vm.name)).find((v) => v?.configMap);
      const cm = src && configMaps.get(`${ns}/${src.configMap.name}`);
      const text = cm?.data?.[base];
      if (typeof text !== "string") return err(o, `${what}: installer ${ic.name} has no ConfigMap key ${base} to install`);
      for (const e of seccompProfileErrors(text)) err(o, `${what}: seccomp profile ${base}: ${e}`);
      return;
    }
  }
  err(o, `${what}: no init container installs its Localhost seccomp profile at ${hostFile} (the container would fail to start)`);
}

// Checks a seccomp profile in OCI runtime-spec form.
export function seccompProfileErrors(text) {
  let p;
  try {
    p = JSON.parse(text);
  } catch (e) {
    return [`not JSON: ${e.message}`];
  }
  const errors = [];
  for (const k of ["archMap", "includes", "excludes"]) {
    if (k in p || (p.syscalls ?? []).some((s) => k in s))
      errors.push(`uses moby-only key ${k}: containerd reads Localhost profiles as OCI LinuxSeccomp and drops it silently`);
  }
  if (!["SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD"].includes(p.defaultAction))
    errors.push(`defaultAction must deny, got ${p.defaultAction}`);
  const unconditional = new Set();
  for (const s of p.syscalls ?? []) {
    if (!Array.isArray(s.names) || !s.action) {
      errors.push("every syscalls entry needs names and action");
      continue;
    }
    if (s.action === "SCMP_ACT_ALLOW" && !(s.args ?? []).length) for (const n of s.names) unconditional.add(n);
  }
  for (const n of IO_URING) if (!unconditional.has(n)) errors.push(`${n} must be allowed (the reason for this profile)`);
  const leaked = NEVER_UNCONDITIONAL.filter((n) => unconditional.has(n));
  if (leaked.length) errors.push(`allows what RuntimeDefault denies: ${leaked.join(", ")}`);
  if (unconditional.has("clone")) errors.push("clone must keep RuntimeDefault's namespace-flag filter");
  return errors;
}
