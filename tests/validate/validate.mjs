#!/usr/bin/env node
// Validates a `berth deploy` build context with tools that berth did not write:
//   [kubernetes-models]   Kubernetes' OpenAPI schemas: types, required fields, enums
//                         (and the Prometheus Operator's ServiceMonitor schema);
//   [client-node]         the field lists of @kubernetes/client-node's generated models,
//                         to reject fields Kubernetes does not know;
//   [dockerfile-utils]    and [dockerfilelint]: the Dockerfile;
//   [kubectl]             `kubectl kustomize` must render each kustomization;
//   [yaml]                every manifest must parse as YAML (strict: no duplicate keys);
// plus [berth-rules], the cross-object checks those tools miss (selectors match labels,
// names are RFC 1123, HPA min <= max, ports and probes agree, the image is pinned, the
// model's sha256 is the one baked into the image, ...).
//
// Usage: node validate.mjs CONTEXT_DIR [--kubectl PATH]
//        node validate.mjs --json CONTEXT_DIR... [--kubectl PATH]
// Prints one line per problem, tagged with the tool that found it, and a summary line
// (or, with --json, {dir: {manifests, problems}} for many contexts in one run);
// exits 0 when there is no problem, 1 otherwise, 2 on usage errors.
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import YAML from "yaml";
import * as clientModels from "@kubernetes/client-node/dist/gen/models/all.js";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Pod } from "kubernetes-models/v1/Pod";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const require = createRequire(import.meta.url);
const dockerfileUtils = require("dockerfile-utils");
const dockerfilelint = require("dockerfilelint");
const here = path.dirname(fileURLToPath(import.meta.url));

// apiVersion/kind -> [kubernetes-models class, client-node root type]
const KINDS = {
  "apps/v1/Deployment": [Deployment, "V1Deployment"],
  "v1/Service": [Service, "V1Service"],
  "autoscaling/v2/HorizontalPodAutoscaler": [HorizontalPodAutoscaler, "V2HorizontalPodAutoscaler"],
  "policy/v1/PodDisruptionBudget": [PodDisruptionBudget, "V1PodDisruptionBudget"],
  "v1/ConfigMap": [ConfigMap, "V1ConfigMap"],
  "monitoring.coreos.com/v1/ServiceMonitor": [ServiceMonitor, null],
  "serving.kserve.io/v1beta1/InferenceService": [null, null],
};
// KServe's PredictorSpec = a PodSpec inline + these (ComponentExtensionSpec and the
// predictor's model frameworks), from KServe's v1beta1 API reference.
const KSERVE_PREDICTOR_FIELDS = new Set([
  "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
  "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
  "deploymentStrategy", "model", "workerSpec", "sklearn", "xgboost", "tensorflow", "pytorch",
  "triton", "onnx", "huggingface", "pmml", "lightgbm", "paddle", "autoScaling"]);
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

const problems = [];
const report = (tool, where, message) => problems.push(`[${tool}] ${where}: ${message}`);

// ---------------------------------------------------------------- unknown fields
function walkType(value, type, where, file) {
  if (value === null || value === undefined) return;
  let m;
  if ((m = /^Array<(.+)>$/.exec(type))) {
    if (Array.isArray(value)) value.forEach((x, i) => walkType(x, m[1], `${where}[${i}]`, file));
    return;
  }
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) {
    for (const [k, x] of Object.entries(value)) walkType(x, m[1], `${where}.${k}`, file);
    return;
  }
  const cls = clientModels[type];
  if (!cls || typeof cls.getAttributeTypeMap !== "function") return;
  if (typeof value !== "object" || Array.isArray(value)) return; // kubernetes-models checks types
  const fields = new Map(cls.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, x] of Object.entries(value)) {
    if (!fields.has(k)) report("client-node", file, `${where}.${k}: unknown field (not in ${type})`);
    else walkType(x, fields.get(k), `${where}.${k}`, file);
  }
}

// ---------------------------------------------------------------- schema checks
function schemaCheck(ModelClass, doc, file, what = "") {
  try {
    new ModelClass(doc).validate();
  } catch (err) {
    report("kubernetes-models", file, `${what}${err.message}`);
  }
}

function checkInferenceService(doc, file) {
  const predictor = doc.spec?.predictor;
  if (!predictor || typeof predictor !== "object") {
    report("berth-rules", file, "spec.predictor: required");
    return;
  }
  const podSpec = {};
  for (const [k, v] of Object.entries(predictor)) {
    if (!KSERVE_PREDICTOR_FIELDS.has(k)) podSpec[k] = v;
  }
  // The predictor's pod part is a core/v1 PodSpec: check it as one.
  schemaCheck(Pod, { apiVersion: "v1", kind: "Pod", metadata: doc.metadata, spec: podSpec }, file,
    "spec.predictor as a PodSpec: ");
  walkType(podSpec, "V1PodSpec", "spec.predictor", file);
  walkType(doc.metadata, "V1ObjectMeta", "metadata", file);
  const containers = arr(predictor.containers);
  if (containers.length !== 1 || containers[0].name !== "kserve-container") {
    report("berth-rules", file, "spec.predictor.containers: expected one container named kserve-container");
  }
  if (predictor.minReplicas > predictor.maxReplicas) {
    report("berth-rules", file, `spec.predictor: minReplicas ${predictor.minReplicas} > maxReplicas ${predictor.maxReplicas}`);
  }
  for (const c of containers) checkContainer(c, file, "spec.predictor.containers", predictor);
}

// ---------------------------------------------------------------- berth rules
const arr = (x) => (Array.isArray(x) ? x : []);
const subset = (sel, labels) =>
  Object.entries(sel || {}).every(([k, v]) => labels && labels[k] === v);

function checkMetadata(doc, file) {
  const meta = doc.metadata || {};
  const label = ["Deployment", "Service", "InferenceService"].includes(doc.kind);
  const re = label ? DNS1123_LABEL : DNS1123_SUBDOMAIN;
  const limit = label ? 63 : 253;
  if (typeof meta.name !== "string" || !re.test(meta.name) || meta.name.length > limit) {
    report("berth-rules", file, `metadata.name ${JSON.stringify(meta.name)} is not an RFC 1123 ${label ? "label" : "subdomain"}`);
  }
  if (meta.namespace !== undefined && !DNS1123_LABEL.test(meta.namespace)) {
    report("berth-rules", file, `metadata.namespace ${JSON.stringify(meta.namespace)} is not an RFC 1123 label`);
  }
  for (const labels of [meta.labels, doc.spec?.template?.metadata?.labels]) {
    for (const [k, v] of Object.entries(labels || {})) {
      const name = k.includes("/") ? k.split("/").pop() : k;
      const prefix = k.includes("/") ? k.slice(0, k.lastIndexOf("/")) : null;
      if (!LABEL_NAME.test(name) || name.length > 63 || (prefix !== null && !DNS1123_SUBDOMAIN.test(prefix))) {
        report("berth-rules", file, `label key ${JSON.stringify(k)} is invalid`);
      }
      if (typeof v !== "string" || !LABEL_VALUE.test(v) || v.length > 63) {
        report("berth-rules", file, `label ${k}=${JSON.stringify(v)}: invalid label value`);
      }
    }
  }
}

function checkContainer(c, file, where, podSpec) {
  const ports = new Set(arr(c.ports).map((p) => p.name).filter(Boolean));
  const numbers = new Set(arr(c.ports).map((p) => p.containerPort));
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    const port = c[probe]?.httpGet?.port;
    if (!c[probe]) report("berth-rules", file, `${where}.${c.name}: ${probe} missing`);
    else if (port !== undefined && !ports.has(port) && !numbers.has(port)) {
      report("berth-rules", file, `${where}.${c.name}.${probe}: port ${JSON.stringify(port)} is not a container port`);
    }
  }
  const image = c.image || "";
  const last = image.split("@")[0].split("/").pop();
  if (!image.includes("@") && !last.includes(":")) report("berth-rules", file, `${where}.${c.name}: image ${JSON.stringify(image)} has no tag`);
  if (/:latest$/.test(image)) report("berth-rules", file, `${where}.${c.name}: image ${JSON.stringify(image)} uses :latest`);
  for (const env of arr(c.env)) {
    const ref = env.valueFrom?.resourceFieldRef;
    if (ref && ref.containerName && ref.containerName !== c.name) {
      report("berth-rules", file, `${where}.${c.name}: env ${env.name} reads resources of unknown container ${ref.containerName}`);
    }
  }
  if (!arr(c.env).some((e) => e.name === "BERTH_NUM_THREADS" && e.valueFrom?.resourceFieldRef?.resource === "limits.cpu")) {
    report("berth-rules", file, `${where}.${c.name}: BERTH_NUM_THREADS must come from limits.cpu`);
  }
  for (const kind of ["cpu", "memory"]) {
    if (!c.resources?.requests?.[kind] || !c.resources?.limits?.[kind]) {
      report("berth-rules", file, `${where}.${c.name}: resources.requests and limits need ${kind}`);
    }
  }
  const sc = c.securityContext || {};
  const pod = podSpec?.securityContext || {};
  if (!(sc.runAsNonRoot ?? pod.runAsNonRoot)) report("berth-rules", file, `${where}.${c.name}: runAsNonRoot is not true`);
  if (sc.readOnlyRootFilesystem !== true) report("berth-rules", file, `${where}.${c.name}: readOnlyRootFilesystem is not true`);
  if (sc.allowPrivilegeEscalation !== false) report("berth-rules", file, `${where}.${c.name}: allowPrivilegeEscalation is not false`);
  if (!arr(sc.capabilities?.drop).includes("ALL")) report("berth-rules", file, `${where}.${c.name}: capabilities.drop lacks ALL`);
  if ((sc.seccompProfile ?? pod.seccompProfile)?.type !== "RuntimeDefault") report("berth-rules", file, `${where}.${c.name}: seccompProfile is not RuntimeDefault`);
  const sleep = c.lifecycle?.preStop?.exec?.command;
  const pause = Array.isArray(sleep) && /sleep$/.test(sleep[0]) ? Number(sleep[1]) : 0;
  const grace = podSpec?.terminationGracePeriodSeconds ?? 30;
  if (!(grace > pause)) report("berth-rules", file, `${where}.${c.name}: terminationGracePeriodSeconds ${grace} leaves no time after the preStop pause ${pause}`);
  const mounts = new Set(arr(podSpec?.volumes).map((v) => v.name));
  for (const m of arr(c.volumeMounts)) {
    if (!mounts.has(m.name)) report("berth-rules", file, `${where}.${c.name}: volumeMount ${m.name} has no volume`);
  }
}

function crossCheck(docs) {
  const of = (kind) => docs.filter((d) => d.doc.kind === kind);
  const deployments = of("Deployment");
  const services = of("Service");
  for (const { doc, file } of deployments) {
    const tmplLabels = doc.spec?.template?.metadata?.labels;
    const sel = doc.spec?.selector?.matchLabels;
    if (!sel || !Object.keys(sel).length || !subset(sel, tmplLabels)) {
      report("berth-rules", file, "spec.selector.matchLabels must be non-empty and match spec.template.metadata.labels");
    }
    const strategy = doc.spec?.strategy;
    if (strategy?.type !== "RollingUpdate" || strategy?.rollingUpdate?.maxUnavailable !== 0) {
      report("berth-rules", file, "spec.strategy must be RollingUpdate with maxUnavailable 0");
    }
    const podSpec = doc.spec?.template?.spec || {};
    for (const c of arr(podSpec.containers)) checkContainer(c, file, "spec.template.spec.containers", podSpec);
  }
  const podLabels = deployments.map(({ doc }) => doc.spec?.template?.metadata?.labels || {});
  const containerPorts = new Set(deployments.flatMap(({ doc }) =>
    arr(doc.spec?.template?.spec?.containers).flatMap((c) => arr(c.ports).flatMap((p) => [p.name, p.containerPort]))));
  for (const { doc, file } of services) {
    const sel = doc.spec?.selector;
    if (!sel || !podLabels.some((l) => subset(sel, l))) {
      report("berth-rules", file, "spec.selector matches no Deployment's pod labels");
    }
    for (const p of arr(doc.spec?.ports)) {
      if (!containerPorts.has(p.targetPort ?? p.port)) {
        report("berth-rules", file, `port ${p.name}: targetPort ${JSON.stringify(p.targetPort)} is no container port`);
      }
    }
  }
  for (const { doc, file } of of("PodDisruptionBudget")) {
    const sel = doc.spec?.selector?.matchLabels;
    if (!sel || !podLabels.some((l) => subset(sel, l))) report("berth-rules", file, "spec.selector matches no Deployment's pod labels");
  }
  for (const { doc, file } of of("HorizontalPodAutoscaler")) {
    const spec = doc.spec || {};
    const min = spec.minReplicas ?? 1;
    if (!(min <= spec.maxReplicas)) report("berth-rules", file, `minReplicas ${min} > maxReplicas ${spec.maxReplicas}`);
    const target = deployments.find(({ doc: d }) => spec.scaleTargetRef?.kind === "Deployment" && d.metadata?.name === spec.scaleTargetRef?.name);
    if (!target) {
      report("berth-rules", file, `scaleTargetRef ${JSON.stringify(spec.scaleTargetRef)} names no Deployment here`);
    } else {
      const replicas = target.doc.spec?.replicas ?? 1;
      if (replicas < min || replicas > spec.maxReplicas) report("berth-rules", file, `Deployment replicas ${replicas} outside [${min}, ${spec.maxReplicas}]`);
    }
  }
  for (const { doc, file } of of("ServiceMonitor")) {
    const sel = doc.spec?.selector?.matchLabels;
    const svc = services.find(({ doc: s }) => subset(sel, s.metadata?.labels) && sel && Object.keys(sel).length);
    if (!svc) { report("berth-rules", file, "spec.selector matches no Service's labels"); continue; }
    const names = new Set(arr(svc.doc.spec?.ports).map((p) => p.name));
    for (const ep of arr(doc.spec?.endpoints)) {
      if (!names.has(ep.port)) report("berth-rules", file, `endpoint port ${JSON.stringify(ep.port)} is no Service port name`);
    }
  }
  for (const { doc, file } of of("ConfigMap")) {
    for (const [key, text] of Object.entries(doc.data || {})) {
      if (key.endsWith(".json")) {
        try { JSON.parse(text); } catch (err) { report("berth-rules", file, `data.${key}: not JSON (${err.message})`); }
      }
    }
  }
}

// ---------------------------------------------------------------- files
function loadYaml(file, rel) {
  const text = fs.readFileSync(file, "utf8");
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true, strict: true });
  const out = [];
  for (const d of docs) {
    for (const e of d.errors) report("yaml", rel, e.message.split("\n")[0]);
    if (!d.errors.length) out.push(d.toJS());
  }
  return out;
}

function checkKustomizationDir(dir, rel, kubectl) {
  const kfile = path.join(dir, "kustomization.yaml");
  const [kust] = loadYaml(kfile, `${rel}/kustomization.yaml`);
  const listed = new Set(arr(kust?.resources));
  const present = fs.readdirSync(dir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
  for (const f of present) if (!listed.has(f)) report("berth-rules", `${rel}/kustomization.yaml`, `${f} is not listed in resources`);
  const docs = [];
  for (const f of listed) {
    if (!fs.existsSync(path.join(dir, f))) { report("berth-rules", `${rel}/kustomization.yaml`, `resource ${f} does not exist`); continue; }
    for (const doc of loadYaml(path.join(dir, f), `${rel}/${f}`)) docs.push({ doc, file: `${rel}/${f}` });
  }
  let rendered = null;
  try {
    rendered = execFileSync(kubectl, ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    report("kubectl", `${rel}/`, `kubectl kustomize failed: ${(err.stderr || err.message).trim().split("\n")[0]}`);
  }
  if (rendered !== null) {
    const out = YAML.parseAllDocuments(rendered).map((d) => d.toJS()).filter(Boolean);
    const key = (d) => `${d.kind}/${d.metadata?.name}`;
    const want = docs.map((d) => key(d.doc)).sort().join(",");
    const got = out.map(key).sort().join(",");
    if (want !== got) report("kubectl", `${rel}/`, `kustomize rendered [${got}], expected [${want}]`);
    if (kust?.namespace && out.some((d) => d.metadata?.namespace !== kust.namespace)) {
      report("kubectl", `${rel}/`, `rendered objects are not all in namespace ${kust.namespace}`);
    }
  }
  return docs;
}

function checkDockerfile(context) {
  const file = path.join(context, "Dockerfile");
  const text = fs.readFileSync(file, "utf8");
  for (const d of dockerfileUtils.validate(text, {})) {
    report("dockerfile-utils", `Dockerfile:${d.range.start.line + 1}`, d.message);
  }
  for (const item of dockerfilelint.run(here, text)) {
    report("dockerfilelint", `Dockerfile:${item.line}`, `${item.title} (${item.rule})`);
  }
  // berth rules: what the linters do not know about this context.
  const lines = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const instr = (name) => lines.filter((l) => l.toUpperCase().startsWith(name + " "));
  const froms = instr("FROM").map((l) => l.split(/\s+/)[1]);
  if (!froms.length || froms.some((f) => f !== "debian:bookworm-slim")) report("berth-rules", "Dockerfile", `every stage must start FROM debian:bookworm-slim, got ${froms.join(", ")}`);
  const user = instr("USER").pop();
  if (!user || /^USER\s+(0|root)(:|\s|$)/.test(user)) report("berth-rules", "Dockerfile", "the final stage must run as a non-root USER");
  const entry = instr("ENTRYPOINT").pop();
  let argv = null;
  try { argv = JSON.parse(entry.slice("ENTRYPOINT".length)); } catch { /* reported below */ }
  if (!Array.isArray(argv)) report("berth-rules", "Dockerfile", "ENTRYPOINT must be exec form (a JSON array)");
  else if (argv.slice(0, 4).join(" ") !== "python3 -m berth serve") report("berth-rules", "Dockerfile", `ENTRYPOINT must run berth serve, got ${argv.join(" ")}`);
  if (!instr("HEALTHCHECK").length) report("berth-rules", "Dockerfile", "HEALTHCHECK missing");
  if (!instr("EXPOSE").some((l) => l.split(/\s+/).includes("8080"))) report("berth-rules", "Dockerfile", "EXPOSE 8080 missing");
  const copies = [];
  for (const l of instr("COPY")) {
    if (/--from=/.test(l)) continue;
    const [src, dest] = l.split(/\s+/).filter((w) => !w.startsWith("--")).slice(1, 3);
    if (!fs.existsSync(path.join(context, src))) report("berth-rules", "Dockerfile", `COPY source ${src} is not in the context`);
    copies.push([src, dest]);
  }
  // Every --library the server is told to load is a file the image gets from the context.
  for (let i = 0; Array.isArray(argv) && i < argv.length; i++) {
    if (argv[i] !== "--library") continue;
    const lib = argv[i + 1] || "";
    const from = copies.find(([src, dest]) => dest.endsWith("/") && src.endsWith("/") && lib.startsWith(dest));
    if (!from || !fs.existsSync(path.join(context, from[0], lib.slice(from[1].length))))
      report("berth-rules", "Dockerfile", `ENTRYPOINT --library ${lib} is not copied into the image from the context`);
  }
  const modelPath = ["model.pt", "model.pt2"].map((f) => path.join(context, "model", f)).find((p) => fs.existsSync(p));
  if (fs.existsSync(path.join(context, "repository"))) {
    checkRepository(context, text, argv, copies);
  } else if (modelPath) {
    const sha = createHash("sha256").update(fs.readFileSync(modelPath)).digest("hex");
    if (!text.includes(`BERTH_MODEL_SHA256=${sha}`)) report("berth-rules", "Dockerfile", `BERTH_MODEL_SHA256 is not the model's sha256 ${sha}`);
    if (!text.includes(`dev.berth.model.sha256="${sha}"`)) report("berth-rules", "Dockerfile", "LABEL dev.berth.model.sha256 is not the model's sha256");
  } else {
    report("berth-rules", "model/model.pt (or model.pt2)", "missing");
  }
}

// A model repository (berth deploy REPO/): the image serves what it copies, and every
// version file's sha256 is the one its model's config.toml pins (the server checks it).
function checkRepository(context, text, argv, copies) {
  const root = path.join(context, "repository");
  const copied = copies.find(([src]) => src.replace(/\/$/, "") === "repository");
  if (!copied) report("berth-rules", "Dockerfile", "repository/ is not copied into the image");
  else if (Array.isArray(argv) && argv[4] !== copied[1].replace(/\/$/, ""))
    report("berth-rules", "Dockerfile", `ENTRYPOINT serves ${argv[4]}, not the repository copied to ${copied[1]}`);
  if (/BERTH_MODEL_SHA256=/.test(text)) report("berth-rules", "Dockerfile", "BERTH_MODEL_SHA256 set for a repository");
  const models = fs.readdirSync(root).filter((m) => fs.statSync(path.join(root, m)).isDirectory());
  if (!models.length) report("berth-rules", "repository/", "no model");
  for (const model of models) {
    const configFile = path.join(root, model, "config.toml");
    const pinned = {};
    if (!fs.existsSync(configFile)) { report("berth-rules", `repository/${model}/config.toml`, "missing"); continue; }
    let table = "";
    for (const line of fs.readFileSync(configFile, "utf8").split("\n")) {
      const header = line.match(/^\[(.*)\]\s*$/);
      if (header) { table = header[1]; continue; }
      const entry = line.match(/^"(\d+)"\s*=\s*"([0-9a-f]{64})"\s*$/);
      if (table === "sha256" && entry) pinned[entry[1]] = entry[2];
    }
    const versions = fs.readdirSync(path.join(root, model)).filter((v) => /^[1-9][0-9]*$/.test(v));
    if (!versions.length) report("berth-rules", `repository/${model}/`, "no version");
    for (const version of versions) {
      const file = ["model.pt", "model.pt2"].map((f) => path.join(root, model, version, f)).find((p) => fs.existsSync(p));
      if (!file) { report("berth-rules", `repository/${model}/${version}/`, "no model.pt or model.pt2"); continue; }
      const sha = createHash("sha256").update(fs.readFileSync(file)).digest("hex");
      if (pinned[version] !== sha)
        report("berth-rules", `repository/${model}/config.toml`, `sha256 "${version}" is ${pinned[version] ?? "missing"}, the file's is ${sha}`);
    }
  }
}

function validateContext(context, kubectl) {
  problems.length = 0;
  const docs = checkKustomizationDir(path.join(context, "k8s"), "k8s", kubectl);
  const kserveDir = path.join(context, "k8s", "kserve");
  if (fs.existsSync(kserveDir)) docs.push(...checkKustomizationDir(kserveDir, "k8s/kserve", kubectl));
  for (const { doc, file } of docs) {
    const entry = KINDS[`${doc?.apiVersion}/${doc?.kind}`];
    if (!entry) { report("berth-rules", file, `unexpected object ${doc?.apiVersion}/${doc?.kind}`); continue; }
    const [ModelClass, rootType] = entry;
    checkMetadata(doc, file);
    if (doc.kind === "InferenceService") { checkInferenceService(doc, file); continue; }
    schemaCheck(ModelClass, doc, file);
    if (rootType) walkType(doc, rootType, doc.kind, file);
    else walkType(doc.metadata, "V1ObjectMeta", "metadata", file);
  }
  // The cross-checks assume the shapes the schemas check; where a shape is wrong they
  // may throw: that is reported as a problem, not a crash.
  try { crossCheck(docs); } catch (err) { report("berth-rules", "k8s/", `cross-checks stopped: ${err.message}`); }
  try { checkDockerfile(context); } catch (err) { report("berth-rules", "Dockerfile", `checks stopped: ${err.message}`); }
  return { manifests: docs.length, problems: [...problems] };
}

function main(argv) {
  const args = argv.slice(2);
  let kubectl = path.join(here, "node_modules", ".berth", "kubectl");
  const k = args.indexOf("--kubectl");
  if (k >= 0) { kubectl = args[k + 1]; args.splice(k, 2); }
  const json = args.includes("--json");
  const dirs = args.filter((a) => a !== "--json");
  const usable = (d) => fs.existsSync(path.join(d, "k8s", "kustomization.yaml"));
  if (!dirs.length || !dirs.every(usable) || (!json && dirs.length !== 1)) {
    console.error("usage: node validate.mjs CONTEXT_DIR [--kubectl PATH]\n" +
                  "       node validate.mjs --json CONTEXT_DIR... [--kubectl PATH]\n" +
                  "(CONTEXT_DIR: a directory written by berth deploy)");
    return 2;
  }
  if (json) {
    const results = Object.fromEntries(dirs.map((d) => [d, validateContext(d, kubectl)]));
    console.log(JSON.stringify(results, null, 1));
    return Object.values(results).some((r) => r.problems.length) ? 1 : 0;
  }
  const result = validateContext(dirs[0], kubectl);
  for (const p of result.problems) console.log(p);
  console.log(`validate: ${result.manifests} manifests and the Dockerfile checked, ${result.problems.length} problem(s)`);
  return result.problems.length ? 1 : 0;
}

process.exitCode = main(process.argv);
