/**
 * infra/k8s/: the base and the production overlay, rendered by `kubectl kustomize` (offline), every
 * resource validated against the Kubernetes OpenAPI schemas (kubernetes-models, and the Prometheus
 * Operator's for the ServiceMonitor), and checked against the code: the configuration each Deployment gives
 * its container loads in production, ports and probe paths are the services', the grace period covers
 * preStop and the stop, secrets are files from the Secret, the gateway finds the chat pods through the
 * headless Service, only the gateway (and Prometheus) may reach them, and the migration init container runs
 * a file the build makes.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Service } from "kubernetes-models/v1/Service";
import { afterAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { SERVICES } from "../../scripts/build.ts";
import { GATEWAY_SECRET_VARIABLES, GATEWAY_VARIABLES, loadGatewayConfig } from "../../services/gateway/src/env.ts";
import { CHAT_SECRET_VARIABLES, CHAT_VARIABLES, loadChatConfig } from "../../services/listings-chat/src/env.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
/** What the services promise for SIGTERM (CONTRACT §6). */
const STOP_WITHIN_S = 10;

/** A rendered resource: its fields are checked one by one below. */
type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: any;
};

const models: Record<string, new (data: never) => { validate(): void }> = {
  "v1/ConfigMap": ConfigMap,
  "v1/Service": Service,
  "apps/v1/Deployment": Deployment,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

/** `kubectl kustomize <dir>`, parsed. */
function render(dir: string): Manifest[] {
  const result = spawnSync("kubectl", ["kustomize", join(root, dir)], { encoding: "utf8", timeout: 60_000 });
  if (result.error) throw new Error(`kubectl is not installed (apt-get install kubernetes-client): ${result.error}`);
  expect(result.status, result.stderr).toBe(0);
  return parseAllDocuments(result.stdout).map((doc) => doc.toJS() as Manifest);
}

function validate(manifest: Manifest) {
  const Model = models[`${manifest.apiVersion}/${manifest.kind}`];
  if (!Model) throw new Error(`no schema for ${manifest.apiVersion} ${manifest.kind}: add it to the test`);
  new Model(manifest as never).validate();
}

const byKind = (manifests: Manifest[], kind: string, name: string) => {
  const found = manifests.find((m) => m.kind === kind && m.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name}`);
  return found;
};

const secretsDir = mkdtempSync(join(tmpdir(), "lc-k8s-secrets-"));
afterAll(() => rmSync(secretsDir, { recursive: true, force: true }));

/**
 * The environment a container gets: its ConfigMaps, its own variables (field references filled in), and
 * every `<NAME>_FILE` pointed at a file with a value good enough for production, as the mounted Secret would be.
 */
function containerEnv(manifests: Manifest[], container: any): Record<string, string> {
  const env: Record<string, string> = {};
  for (const source of container.envFrom ?? [])
    Object.assign(env, byKind(manifests, "ConfigMap", source.configMapRef.name).data);
  const values: Record<string, string> = {
    DATABASE_URL: "postgres://chat_app:secret@postgres:5432/chat",
    REDIS_URL: "redis://redis:6379",
    JWT_SECRET: "j".repeat(40),
  };
  for (const variable of container.env ?? []) {
    if (variable.valueFrom?.fieldRef) env[variable.name] = "listings-chat-7c9f-abcde";
    else if (variable.name.endsWith("_FILE")) {
      const name = variable.name.slice(0, -"_FILE".length);
      const file = join(secretsDir, `${container.name}-${name}`);
      writeFileSync(file, `${values[name] ?? `${name.toLowerCase()}-`.padEnd(48, "x")}\n`);
      env[variable.name] = file;
    } else env[variable.name] = variable.value;
  }
  return env;
}

describe.each(["infra/k8s/base", "infra/k8s/overlays/production"])("%s", (dir) => {
  const manifests = render(dir);
  const chat = byKind(manifests, "Deployment", "listings-chat");
  const gateway = byKind(manifests, "Deployment", "gateway");
  const chatContainer = chat.spec.template.spec.containers[0];
  const gatewayContainer = gateway.spec.template.spec.containers[0];

  it("is valid against the Kubernetes (and Prometheus Operator) schemas", () => {
    expect(manifests.map((m) => m.kind).sort()).toEqual(
      [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "Deployment",
        "HorizontalPodAutoscaler",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "Service",
        "Service",
        "ServiceMonitor",
      ].sort(),
    );
    for (const manifest of manifests) validate(manifest);
    // The validator does refuse what is wrong.
    const broken = structuredClone(chat);
    broken.spec.template.spec.containers[0].ports[0].containerPort = "eighty";
    expect(() => validate(broken)).toThrow();
  });

  it("gives each container a configuration its service loads in production, with only variables it reads", () => {
    const chatEnv = containerEnv(manifests, chatContainer);
    const gatewayEnv = containerEnv(manifests, gatewayContainer);
    const known = (variables: readonly string[], secrets: readonly string[], name: string) =>
      variables.includes(name) || (name.endsWith("_FILE") && secrets.includes(name.slice(0, -"_FILE".length)));
    expect(Object.keys(chatEnv).filter((n) => !known(CHAT_VARIABLES, CHAT_SECRET_VARIABLES, n))).toEqual([]);
    expect(Object.keys(gatewayEnv).filter((n) => !known(GATEWAY_VARIABLES, GATEWAY_SECRET_VARIABLES, n))).toEqual([]);
    // Secrets never in the environment itself: only their files.
    for (const env of [chatEnv, gatewayEnv]) {
      for (const secret of ["INTERNAL_TOKEN", "WS_TOKEN_SECRET", "JWT_SECRET", "DATABASE_URL", "REDIS_URL"]) {
        expect(env[secret], secret).toBeUndefined();
      }
    }

    const chatConfig = loadChatConfig(chatEnv);
    const gatewayConfig = loadGatewayConfig(gatewayEnv);
    expect(chatConfig.production && gatewayConfig.production).toBe(true);
    expect(chatConfig.database).toMatchObject({ url: "postgres://chat_app:secret@postgres:5432/chat" });
    expect(chatConfig.redis?.url).toBe("redis://redis:6379");
    expect(gatewayConfig.redis?.url).toBe("redis://redis:6379");
    expect(chatConfig.instanceId).toBe("listings-chat-7c9f-abcde");

    // The init container migrates with the chat service's own configuration, with a file the build makes.
    const migrate = chat.spec.template.spec.initContainers[0];
    expect(migrate.command).toBeUndefined(); // the image's entrypoint (tini) stays PID 1
    expect(migrate.args).toEqual(["node", "dist/listings-chat/migrate.js"]);
    expect(Object.keys(SERVICES["listings-chat"].entries)).toContain("migrate");
    expect(loadChatConfig(containerEnv(manifests, migrate)).database).toMatchObject({ url: expect.any(String) });
    expect(migrate.image).toBe(chatContainer.image);

    // Every secret file is mounted from the Secret's key of the same name.
    for (const [deployment, container] of [
      [chat, chatContainer],
      [gateway, gatewayContainer],
      [chat, migrate],
    ]) {
      const volumes = deployment.spec.template.spec.volumes;
      for (const variable of container.env.filter((v: { name: string }) => v.name.endsWith("_FILE"))) {
        const mount = container.volumeMounts.find((m: { mountPath: string }) =>
          variable.value.startsWith(`${m.mountPath}/`),
        );
        expect(mount, variable.name).toBeDefined();
        const volume = volumes.find((v: { name: string }) => v.name === mount.name);
        const key = variable.value.slice(mount.mountPath.length + 1);
        expect(volume.secret.secretName).toBe("listings-chat-secrets");
        expect(volume.secret.items.map((i: { key: string }) => i.key)).toContain(key);
      }
    }
  });

  it("uses the services' ports, probe paths and stop timings", () => {
    const chatConfig = loadChatConfig(containerEnv(manifests, chatContainer));
    const gatewayConfig = loadGatewayConfig(containerEnv(manifests, gatewayContainer));
    expect(chatContainer.ports).toEqual([{ name: "http", containerPort: chatConfig.port }]);
    expect(gatewayContainer.ports).toEqual([{ name: "http", containerPort: gatewayConfig.port }]);
    // CONTRACT §1's ports.
    expect([chatConfig.port, gatewayConfig.port]).toEqual([8086, 3000]);
    for (const [deployment, container, stopMs] of [
      [chat, chatContainer, chatConfig.shutdownTimeoutMs],
      [gateway, gatewayContainer, gatewayConfig.shutdownDrainMs],
    ]) {
      expect(container.livenessProbe.httpGet).toEqual({ path: "/health", port: "http" });
      expect(container.startupProbe.httpGet).toEqual({ path: "/health", port: "http" });
      expect(container.readinessProbe.httpGet).toEqual({ path: "/ready", port: "http" });
      // The readiness probe's own answer is bounded at 1 s by the services: its timeout leaves room for it.
      expect(container.readinessProbe.timeoutSeconds).toBeGreaterThanOrEqual(2);
      const preStopS = Number(container.lifecycle.preStop.exec.command[1]);
      expect(container.lifecycle.preStop.exec.command[0]).toBe("sleep");
      // Grace: preStop, then the service's stop (its drain, and the hard exit under 10 s), with margin.
      expect(stopMs).toBeLessThan(STOP_WITHIN_S * 1_000);
      expect(deployment.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(preStopS + STOP_WITHIN_S);
      expect(container.securityContext).toMatchObject({
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ["ALL"] },
      });
      expect(deployment.spec.template.spec.securityContext.runAsNonRoot).toBe(true);
      expect(container.resources.requests.cpu).toBeDefined();
      expect(container.resources.limits.memory).toBeDefined();
    }
    // The start-up probe gives listings-chat at least a minute (its database and Redis).
    expect(
      chatContainer.startupProbe.periodSeconds * chatContainer.startupProbe.failureThreshold,
    ).toBeGreaterThanOrEqual(60);
  });

  it("lets the gateway find every chat pod through the headless Service, and nobody else reach them", () => {
    const headless = byKind(manifests, "Service", "listings-chat-headless");
    expect(headless.spec.clusterIP).toBe("None");
    expect(headless.spec.selector).toEqual(chat.spec.selector.matchLabels);
    const gatewayConfig = loadGatewayConfig(containerEnv(manifests, gatewayContainer));
    expect(gatewayConfig.chatUpstreams).toEqual([`dns+http://listings-chat-headless:${headless.spec.ports[0].port}`]);
    expect(headless.spec.ports[0].port).toBe(chatContainer.ports[0].containerPort);

    const policy = byKind(manifests, "NetworkPolicy", "listings-chat-from-gateway-only");
    expect(policy.spec.podSelector.matchLabels).toEqual(chat.spec.selector.matchLabels);
    expect(policy.spec.policyTypes).toEqual(["Ingress"]);
    const [fromGateway, fromPrometheus] = policy.spec.ingress;
    expect(fromGateway.from).toEqual([{ podSelector: { matchLabels: gateway.spec.selector.matchLabels } }]);
    expect(fromPrometheus.from[0].podSelector.matchLabels).toEqual({ "app.kubernetes.io/name": "prometheus" });
    for (const rule of policy.spec.ingress) expect(rule.ports).toEqual([{ port: 8086, protocol: "TCP" }]);

    for (const name of ["listings-chat", "gateway"]) {
      const deployment = byKind(manifests, "Deployment", name);
      expect(byKind(manifests, "PodDisruptionBudget", name).spec.selector).toEqual(deployment.spec.selector);
      const hpa = byKind(manifests, "HorizontalPodAutoscaler", name);
      expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name });
      expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    }
  });

  it("has Prometheus scrape both services' /metrics with the internal token", () => {
    const monitor = byKind(manifests, "ServiceMonitor", "listings-chat");
    expect(monitor.spec.endpoints).toEqual([
      {
        port: "http",
        path: "/metrics",
        interval: "30s",
        authorization: { type: "Bearer", credentials: { name: "listings-chat-secrets", key: "INTERNAL_TOKEN" } },
      },
    ]);
    const selected = manifests.filter(
      (m) =>
        m.kind === "Service" &&
        monitor.spec.selector.matchExpressions[0].values.includes(m.metadata.labels?.["app.kubernetes.io/name"]),
    );
    expect(selected.map((s) => s.metadata.name).sort()).toEqual(["gateway", "listings-chat-headless"]);
    for (const service of selected) expect(service.spec.ports.map((p: { name: string }) => p.name)).toContain("http");
  });

  if (dir.includes("production")) {
    it("runs in its namespace, with registry images and more room than the base", () => {
      for (const manifest of manifests) expect(manifest.metadata.namespace).toBe("listings-chat");
      expect(chatContainer.image).toMatch(/^registry\.example\.com\/listings-chat\/listings-chat:/);
      expect(gatewayContainer.image).toMatch(/^registry\.example\.com\/listings-chat\/gateway:/);
      expect(byKind(manifests, "HorizontalPodAutoscaler", "gateway").spec.minReplicas).toBe(3);
      expect(chatContainer.resources.requests.cpu).toBe("1");
    });
  }
});
