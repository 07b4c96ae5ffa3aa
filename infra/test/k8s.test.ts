/**
 * infra/k8s/: the base and the production overlay, rendered by `kubectl kustomize` (offline), every
 * resource validated against the Kubernetes OpenAPI schemas (kubernetes-models, and the Prometheus
 * Operator's for the ServiceMonitor), and checked against the code: the configuration each Deployment gives
 * its container loads in production, ports and probe paths are the services', the grace period covers
 * preStop and the stop, secrets are files from the Secret, the gateway finds the chat pods through the
 * headless Service, only the gateway (and Prometheus) may reach them, and the migration init container runs
 * a file the build makes. The PgBouncer option (overlays/production-pgbouncer) too, and on every rendering
 * the connection arithmetic: what the pods (and PgBouncer) may open fits the max_connections declared.
 * Webhooks (CONTRACT §9): off in the base, on with components/webhooks (overlays/production-webhooks), the chat
 * pods' egress open to the receiver, and the PrometheusRule's alerts checked and proven to fire by promtool.
 * Photos (CONTRACT §11): on in every rendering, in S3 with the key from the Secret's files (chat container and
 * migration init container alike), and memory for the images decoded at once.
 */
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Service } from "kubernetes-models/v1/Service";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { SERVICES } from "../../scripts/build.ts";
import { GATEWAY_SECRET_VARIABLES, GATEWAY_VARIABLES, loadGatewayConfig } from "../../services/gateway/src/env.ts";
import { defaultPostgresTimeouts, withPinnedIsolation } from "../../services/listings-chat/src/db/client.ts";
import { CHAT_SECRET_VARIABLES, CHAT_VARIABLES, loadChatConfig } from "../../services/listings-chat/src/env.ts";
import { defaultImageLimits } from "../../services/listings-chat/src/media/images.ts";
import { sessionsPerChatInstance } from "./postgres-sessions.ts";
import { promtoolAvailable, type RuleGroup, runPromtool } from "./webhook-ops-alerts.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
/** What the services promise for SIGTERM (CONTRACT §6). */
const STOP_WITHIN_S = 10;

/** A rendered resource: its fields are checked one by one below. */
type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
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
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
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

/** PostgreSQL itself (the Secret's DATABASE_URL), and PgBouncer's Service (PGBOUNCER_DATABASE_URL). */
const POSTGRES_URL = "postgres://chat_app:secret@postgres:5432/chat";
const PGBOUNCER_URL = "postgres://chat_app:secret@listings-chat-pgbouncer:6432/chat";

/** The values of the Secret's keys, good enough for production. */
const SECRET_VALUES: Record<string, string> = {
  DATABASE_URL: POSTGRES_URL,
  PGBOUNCER_DATABASE_URL: PGBOUNCER_URL,
  REDIS_URL: "redis://redis:6379",
  JWT_SECRET: "j".repeat(40),
  JWT_PUBLIC_KEY: generateKeyPairSync("ec", { namedCurve: "P-256" })
    .publicKey.export({ type: "spki", format: "pem" })
    .toString(),
  JWT_JWKS_URL: "https://monolith.example/.well-known/jwks.json",
  // Standard Webhooks' form: whsec_ and the base64 of the key.
  WEBHOOK_SECRET: `whsec_${Buffer.alloc(32, 7).toString("base64")}`,
  // AWS's documented example key: the photos' bucket.
  S3_ACCESS_KEY_ID: "AKIAIOSFODNN7EXAMPLE",
  S3_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};

/** A Kubernetes memory quantity in bytes ("512Mi", "1Gi", "1536Mi", "800M", "1e9"). */
function memoryBytes(quantity: string | number): number {
  const match = /^(\d+(?:\.\d+)?(?:e\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(quantity));
  if (!match) throw new Error(`not a memory quantity: ${quantity}`);
  const units: Record<string, number> = {
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
  };
  return Number(match[1]) * (match[2] ? units[match[2]]! : 1);
}
/** What `kubectl create secret generic listings-chat-secrets` puts in it by default here: JWT_SECRET of the three. */
const DEFAULT_SECRET_KEYS = ["INTERNAL_TOKEN", "WS_TOKEN_SECRET", "DATABASE_URL", "REDIS_URL", "JWT_SECRET"];

/**
 * The environment a container gets: its ConfigMaps, its own variables (field references filled in), and
 * every `<NAME>_FILE` pointed at a file with a value good enough for production, as the mounted Secret's key
 * (the file's name) would be, and a `SECRETS_DIR` holding a file for each of `secretKeys`.
 */
function containerEnv(
  manifests: Manifest[],
  container: any,
  secretKeys: readonly string[] = DEFAULT_SECRET_KEYS,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const source of container.envFrom ?? [])
    Object.assign(env, byKind(manifests, "ConfigMap", source.configMapRef.name).data);
  for (const variable of container.env ?? []) {
    if (variable.valueFrom?.fieldRef) env[variable.name] = "listings-chat-7c9f-abcde";
    else if (variable.name === "SECRETS_DIR") {
      // The mounted Secret as kubelet writes it: a file for each key the Secret holds.
      const dir = mkdtempSync(join(secretsDir, `${container.name}-`));
      for (const key of secretKeys) {
        writeFileSync(join(dir, key), `${SECRET_VALUES[key] ?? `${key.toLowerCase()}-`.padEnd(48, "x")}\n`);
      }
      env.SECRETS_DIR = dir;
    } else if (variable.name.endsWith("_FILE")) {
      const key = basename(variable.value);
      const file = join(secretsDir, `${container.name}-${key}`);
      writeFileSync(file, `${SECRET_VALUES[key] ?? `${key.toLowerCase()}-`.padEnd(48, "x")}\n`);
      env[variable.name] = file;
    } else env[variable.name] = variable.value;
  }
  return env;
}

/** pgbouncer.ini as sections of settings (`;` comments, `[section]`, `key = value`). */
function parseIni(text: string): Record<string, Record<string, string>> {
  const sections: Record<string, Record<string, string>> = {};
  let section: Record<string, string> | undefined;
  for (const line of text.split("\n").map((l) => l.trim())) {
    if (!line || line.startsWith(";") || line.startsWith("#")) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) sections[header[1]!] = section = {};
    else {
      const at = line.indexOf("=");
      if (!section || at < 0) throw new Error(`pgbouncer.ini: cannot read ${JSON.stringify(line)}`);
      section[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
  }
  return sections;
}

/**
 * The pods a rolling update adds to `replicas`: its surge (maxSurge: a number, or a percentage of `replicas`,
 * rounded up), and as many old pods still stopping, which the Deployment no longer counts but whose pools
 * stay open until their process ends.
 */
function rolloutExtra(deployment: Manifest, replicas: number): number {
  const maxSurge = deployment.spec.strategy?.rollingUpdate?.maxSurge ?? "25%";
  const surge = typeof maxSurge === "number" ? maxSurge : Math.ceil((replicas * Number.parseInt(maxSurge, 10)) / 100);
  return 2 * surge;
}

/** The PgBouncer of the rendering, if any: its Deployment and its pgbouncer.ini. */
function pgbouncerOf(manifests: Manifest[]) {
  const deployment = manifests.find((m) => m.kind === "Deployment" && m.metadata.name === "listings-chat-pgbouncer");
  if (!deployment) return undefined;
  const config = deployment.spec.template.spec.volumes.find((v: { name: string }) => v.name === "config");
  const ini = parseIni(byKind(manifests, "ConfigMap", config.configMap.name).data["pgbouncer.ini"]);
  return { deployment, ini, settings: ini.pgbouncer ?? {} };
}

/**
 * The PostgreSQL sessions a rendering lets the chat service open at most, against the max_connections its
 * chat Deployment declares. Straight to PostgreSQL: every pod the autoscaler may run plus a rollout's extra
 * pods, times (write pool + read pool + one migration session). Through PgBouncer: PgBouncer's pods (plus its
 * rollout's) times its cap per pod (max_db_connections), plus the chat pods' migration sessions, which bypass
 * it. Both plus the reserve (superuser_reserved_connections and the other clients) the Deployment declares.
 */
function postgresConnections(manifests: Manifest[]) {
  const chat = byKind(manifests, "Deployment", "listings-chat");
  const annotation = (name: string) => {
    const value = chat.metadata.annotations?.[`listings-chat/${name}`];
    if (!/^\d+$/.test(value ?? "")) throw new Error(`the listings-chat Deployment declares no listings-chat/${name}`);
    return Number(value);
  };
  const maxConnections = annotation("postgres-max-connections");
  const reserved = annotation("postgres-reserved-connections");
  const maxReplicas = byKind(manifests, "HorizontalPodAutoscaler", "listings-chat").spec.maxReplicas;
  const chatPods = maxReplicas + rolloutExtra(chat, maxReplicas);
  const perPod = sessionsPerChatInstance(
    loadChatConfig(containerEnv(manifests, chat.spec.template.spec.containers[0])),
  );
  const bouncer = pgbouncerOf(manifests);
  if (!bouncer) {
    return { maxConnections, chatPods, perPod, needed: chatPods * (perPod.pools + perPod.migration) + reserved };
  }
  const { replicas } = bouncer.deployment.spec;
  const perBouncer = Number(bouncer.settings.max_db_connections);
  const bouncerPods = replicas + rolloutExtra(bouncer.deployment, replicas);
  return {
    maxConnections,
    chatPods,
    perPod,
    needed: bouncerPods * perBouncer + chatPods * perPod.migration + reserved,
    clients: chatPods * perPod.pools,
  };
}

const RENDERINGS = [
  "infra/k8s/base",
  "infra/k8s/overlays/production",
  "infra/k8s/overlays/production-pgbouncer",
  "infra/k8s/overlays/production-webhooks",
];

describe.each(RENDERINGS)("%s", (dir) => {
  const manifests = render(dir);
  const chat = byKind(manifests, "Deployment", "listings-chat");
  const gateway = byKind(manifests, "Deployment", "gateway");
  const chatContainer = chat.spec.template.spec.containers[0];
  const gatewayContainer = gateway.spec.template.spec.containers[0];
  const bouncer = pgbouncerOf(manifests);
  /** components/webhooks is in (overlays/production-webhooks). */
  const webhooks = dir.endsWith("-webhooks");

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
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        // PgBouncer: its settings, Deployment, Service, the ExternalName of PostgreSQL, PDB and NetworkPolicy.
        ...(dir.endsWith("-pgbouncer")
          ? ["ConfigMap", "Deployment", "Service", "Service", "PodDisruptionBudget", "NetworkPolicy"]
          : []),
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
      for (const secret of [
        "INTERNAL_TOKEN",
        "WS_TOKEN_SECRET",
        "JWT_SECRET",
        "DATABASE_URL",
        "MIGRATION_DATABASE_URL",
        "REDIS_URL",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
      ]) {
        expect(env[secret], secret).toBeUndefined();
      }
    }

    const chatConfig = loadChatConfig(chatEnv);
    const gatewayConfig = loadGatewayConfig(gatewayEnv);
    expect(chatConfig.production && gatewayConfig.production).toBe(true);
    // The pools straight to PostgreSQL, or through PgBouncer's Service; the migrations straight to PostgreSQL.
    if (bouncer) {
      const service = byKind(manifests, "Service", "listings-chat-pgbouncer");
      expect(new URL(PGBOUNCER_URL).host).toBe(`${service.metadata.name}:${service.spec.ports[0].port}`);
    }
    expect(chatConfig.database).toEqual(
      expect.objectContaining({ url: bouncer ? PGBOUNCER_URL : POSTGRES_URL, migrationUrl: POSTGRES_URL }),
    );
    expect(chatConfig.redis?.url).toBe("redis://redis:6379");
    expect(gatewayConfig.redis?.url).toBe("redis://redis:6379");
    expect(chatConfig.instanceId).toBe("listings-chat-7c9f-abcde");

    // The init container migrates with the chat service's own configuration, with a file the build makes.
    const migrate = chat.spec.template.spec.initContainers[0];
    expect(migrate.command).toBeUndefined(); // the image's entrypoint (tini) stays PID 1
    expect(migrate.args).toEqual(["node", "dist/listings-chat/migrate.js"]);
    expect(Object.keys(SERVICES["listings-chat"].entries)).toContain("migrate");
    expect(loadChatConfig(containerEnv(manifests, migrate)).database).toEqual(
      expect.objectContaining({ url: bouncer ? PGBOUNCER_URL : POSTGRES_URL, migrationUrl: POSTGRES_URL }),
    );
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

  it("lets the gateway verify access tokens by whichever of the three keys the Secret holds, with no patch", () => {
    const dirVariable = gatewayContainer.env.find((v: { name: string }) => v.name === "SECRETS_DIR");
    const mount = gatewayContainer.volumeMounts.find((m: { mountPath: string }) => m.mountPath === dirVariable?.value);
    expect(mount?.readOnly).toBe(true);
    const volume = gateway.spec.template.spec.volumes.find((v: { name: string }) => v.name === mount.name);
    const sources = volume.projected.sources.map((source: any) => source.secret);
    expect(new Set(sources.map((source: { name: string }) => source.name))).toEqual(new Set(["listings-chat-secrets"]));
    const keysOf = (optional: boolean) =>
      sources
        .filter((source: { optional?: boolean }) => Boolean(source.optional) === optional)
        .flatMap((source: { items: { key: string; path: string }[] }) =>
          source.items.map((item) => {
            expect(item.path).toBe(item.key);
            return item.key;
          }),
        )
        .sort();
    // Only what the gateway reads: never the database's URL or the webhook secret.
    expect(keysOf(false)).toEqual(["INTERNAL_TOKEN", "REDIS_URL", "WS_TOKEN_SECRET"]);
    expect(keysOf(true)).toEqual(["JWT_JWKS_URL", "JWT_PUBLIC_KEY", "JWT_SECRET"]);
    const required = ["INTERNAL_TOKEN", "WS_TOKEN_SECRET", "REDIS_URL"];
    const kinds = { JWT_SECRET: "secret", JWT_PUBLIC_KEY: "public-key", JWT_JWKS_URL: "jwks" } as const;
    for (const [key, kind] of Object.entries(kinds)) {
      const config = loadGatewayConfig(containerEnv(manifests, gatewayContainer, [...required, key]));
      expect(config.production).toBe(true);
      expect(config.accessTokens.key.kind, key).toBe(kind);
    }
    // None of the three, or two: the gateway refuses to start, saying which.
    expect(() => loadGatewayConfig(containerEnv(manifests, gatewayContainer, required))).toThrow(
      /JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL is required/,
    );
    expect(() =>
      loadGatewayConfig(containerEnv(manifests, gatewayContainer, [...required, "JWT_SECRET", "JWT_PUBLIC_KEY"])),
    ).toThrow(/not JWT_SECRET and JWT_PUBLIC_KEY/);
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
    const [fromGateway, fromPrometheus, fromPlatform] = policy.spec.ingress;
    expect(policy.spec.ingress).toHaveLength(3);
    expect(fromGateway.from).toEqual([{ podSelector: { matchLabels: gateway.spec.selector.matchLabels } }]);
    expect(fromPrometheus.from[0].podSelector.matchLabels).toEqual({ "app.kubernetes.io/name": "prometheus" });
    // The monolith's callers of /internal/chat/… (CONTRACT §8), through the load-balanced internal Service.
    expect(fromPlatform.from).toEqual([
      { namespaceSelector: {}, podSelector: { matchLabels: { "listings-chat/platform-client": "true" } } },
    ]);
    const internal = byKind(manifests, "Service", "listings-chat-internal");
    expect(internal.spec.clusterIP).toBeUndefined();
    expect(internal.spec.selector).toEqual(chat.spec.selector.matchLabels);
    expect(internal.spec.ports[0].port).toBe(chatContainer.ports[0].containerPort);
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

  it(webhooks ? "turns webhooks on: WEBHOOK_URL, and WEBHOOK_SECRET from the Secret" : "sends no webhooks", () => {
    const env = containerEnv(manifests, chatContainer);
    const config = loadChatConfig(env);
    const data = byKind(manifests, "ConfigMap", "listings-chat-config").data;
    if (!webhooks) {
      expect(env.WEBHOOK_URL ?? env.WEBHOOK_SECRET_FILE).toBeUndefined();
      expect(config.webhooks).toBeUndefined();
      return;
    }
    // The key is required (not `optional`): without it the pod does not start, rather than sign with nothing.
    const volumes = chat.spec.template.spec.volumes;
    const volume = volumes.find((v: any) => v.secret?.items?.some((i: { key: string }) => i.key === "WEBHOOK_SECRET"));
    expect(volume.secret.secretName).toBe("listings-chat-secrets");
    expect(volume.secret.optional).toBeUndefined();
    expect(config.webhooks).toMatchObject({
      url: data.WEBHOOK_URL,
      secret: `whsec_${Buffer.alloc(32, 7).toString("base64")}`,
      timeoutMs: Number(data.WEBHOOK_TIMEOUT_MS),
      maxAgeS: Number(data.WEBHOOK_MAX_AGE_S),
      notifyUnreadAfterS: Number(data.NOTIFY_UNREAD_AFTER_S),
    });
    // The ConfigMap's values are CONTRACT §9's defaults, written out.
    expect(config.webhooks).toMatchObject({ timeoutMs: 5_000, maxAgeS: 86_400, notifyUnreadAfterS: 60 });
    // Without the secret, production refuses to start, naming it.
    const { WEBHOOK_SECRET_FILE: _, ...unsigned } = env;
    expect(() => loadChatConfig(unsigned)).toThrow(/WEBHOOK_SECRET/);
  });

  it("stores photos in S3, with the key from the Secret's files in the container and the init container", () => {
    const data = byKind(manifests, "ConfigMap", "listings-chat-config").data;
    const migrate = chat.spec.template.spec.initContainers[0];
    for (const container of [chatContainer, migrate]) {
      const env = containerEnv(manifests, container);
      // The key as files only, from the Secret's keys of the same name (checked for every _FILE above).
      expect(env.S3_ACCESS_KEY_ID_FILE, container.name).toBeDefined();
      expect(env.S3_SECRET_ACCESS_KEY_FILE, container.name).toBeDefined();
      const config = loadChatConfig(env);
      expect(config.storage, container.name).toEqual({
        kind: "s3",
        // AWS: its endpoint for the region, virtual-hosted URLs; browsers reach that same endpoint.
        endpoint: undefined,
        publicEndpoint: undefined,
        bucket: data.S3_BUCKET,
        region: data.S3_REGION,
        accessKeyId: SECRET_VALUES.S3_ACCESS_KEY_ID,
        secretAccessKey: SECRET_VALUES.S3_SECRET_ACCESS_KEY,
        forcePathStyle: false,
      });
      expect(config.photos).toEqual({ uploadMaxBytes: 10 * 1024 * 1024, concurrency: Number(data.PHOTO_CONCURRENCY) });
      expect(config.warnings.join(" ")).not.toMatch(/STORAGE/);
      // Without the key the container refuses to start, naming it (STORAGE=s3 in production).
      const { S3_ACCESS_KEY_ID_FILE: _id, S3_SECRET_ACCESS_KEY_FILE: _secret, ...keyless } = env;
      expect(() => loadChatConfig(keyless), container.name).toThrow(/S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY/);
    }
    // The keys are required (not `optional`): a pod without them does not start, rather than lose photos.
    const volume = chat.spec.template.spec.volumes.find((v: any) =>
      v.secret?.items?.some((i: { key: string }) => i.key === "S3_SECRET_ACCESS_KEY"),
    );
    expect(volume.secret.optional).toBeUndefined();
    expect(volume.secret.items.map((i: { key: string }) => i.key)).toContain("S3_ACCESS_KEY_ID");
    // The gateway never gets the store's key.
    expect(JSON.stringify(gateway.spec.template.spec.volumes)).not.toContain("S3_");

    // Memory: above what the pod asks for, room for every image it decodes at once (pixels x 4 bytes, RGBA).
    const { requests, limits } = chatContainer.resources;
    const photosBytes = Number(data.PHOTO_CONCURRENCY) * defaultImageLimits.maxPixels * 4;
    expect(memoryBytes(limits.memory) - memoryBytes(requests.memory)).toBeGreaterThanOrEqual(photosBytes);
    expect(memoryBytes("1536Mi")).toBe(1536 * 2 ** 20);
  });

  it("leaves the chat pods' egress open: their webhooks reach the monolith's receiver, photos the store", () => {
    const labels: Record<string, string> = chat.spec.template.metadata.labels;
    const policies = manifests.filter((m) => m.kind === "NetworkPolicy");
    expect(policies.length).toBeGreaterThan(0);
    const restricting = policies.filter((policy) => {
      const selected = Object.entries(policy.spec.podSelector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
      const types: string[] = policy.spec.policyTypes ?? (policy.spec.egress ? ["Ingress", "Egress"] : ["Ingress"]);
      return selected && types.includes("Egress");
    });
    expect(restricting.map((p) => p.metadata.name)).toEqual([]);
  });

  it("alerts on a growing webhook backlog and on dead deliveries: promtool checks the rules and sees them fire", (ctx) => {
    if (!promtoolAvailable()) ctx.skip();
    const rule = byKind(manifests, "PrometheusRule", "listings-chat");
    // Beside the ServiceMonitor that scrapes what it reads.
    expect(rule.metadata.namespace).toBe(byKind(manifests, "ServiceMonitor", "listings-chat").metadata.namespace);
    const groups: RuleGroup[] = rule.spec.groups;
    expect(groups.flatMap((g) => g.rules.map((r) => r.alert)).sort()).toEqual([
      "ListingsChatWebhookBacklogGrowing",
      "ListingsChatWebhookBacklogGrowing",
      "ListingsChatWebhooksDead",
    ]);
    const { check, test } = runPromtool(groups);
    expect(check.status, check.output).toBe(0);
    expect(check.output).toContain("SUCCESS: 3 rules found");
    expect(test.status, test.output).toBe(0);
    expect(test.output).toContain("SUCCESS");

    // The unit tests have teeth: each of these wrong rules fails them (once: the rules are the base's everywhere).
    if (dir !== RENDERINGS[0]) return;
    const wrong: Array<[string, (rules: RuleGroup["rules"]) => void]> = [
      ["a threshold of 50 min for the oldest", (rules) => (rules[0]!.expr = rules[0]!.expr.replace("300", "3000"))],
      ["no wait before firing on the oldest", (rules) => (rules[0]!.for = "1m")],
      ["growth alone, emptying or not", (rules) => (rules[1]!.expr = rules[1]!.expr.replace(/\s+and[\s\S]*$/, ""))],
      ["never on growth", (rules) => (rules[1]!.expr = `${rules[1]!.expr} > 1e9`)],
      ["dead ones ignored", (rules) => (rules[2]!.expr = "max(listings_chat_webhooks_dead) > 10")],
      ["dead at once", (rules) => (rules[2]!.for = "0s")],
    ];
    for (const [what, mutate] of wrong) {
      const mutated = structuredClone(groups);
      mutate(mutated[0]!.rules);
      const result = runPromtool(mutated);
      expect(result.check.status, what).toBe(0);
      expect(result.test.status, `${what}: promtool test rules passed`).not.toBe(0);
    }
  });

  it("declares a max_connections that every session the release may open fits in", () => {
    const budget = postgresConnections(manifests);
    expect(budget.perPod.pools).toBe(
      Number(byKind(manifests, "ConfigMap", "listings-chat-config").data.DATABASE_POOL_SIZE) +
        Number(byKind(manifests, "ConfigMap", "listings-chat-config").data.DATABASE_READ_POOL_SIZE),
    );
    expect(budget.needed).toBeLessThanOrEqual(budget.maxConnections);
    if (bouncer) {
      // Every chat pod's pools may land on one PgBouncer pod.
      expect(Number(bouncer.settings.max_client_conn)).toBeGreaterThanOrEqual(budget.clients!);
    }

    // The sum follows the manifests: one more pod, or one more connection in a pool, needs more sessions.
    const more = structuredClone(manifests);
    byKind(more, "HorizontalPodAutoscaler", "listings-chat").spec.maxReplicas += 1;
    byKind(more, "ConfigMap", "listings-chat-config").data.DATABASE_POOL_SIZE = String(budget.perPod.pools);
    const grown = postgresConnections(more);
    expect(grown.chatPods).toBe(budget.chatPods + 1);
    expect(grown.perPod.pools).toBeGreaterThan(budget.perPod.pools);
    if (bouncer) expect(grown.clients).toBeGreaterThan(budget.clients!);
    else expect(grown.needed).toBeGreaterThan(budget.needed);
  });

  if (bouncer) {
    const { deployment, ini, settings } = bouncer;
    const container = deployment.spec.template.spec.containers[0];

    it("runs PgBouncer in transaction mode with what the chat service's sessions need", () => {
      expect(settings.pool_mode).toBe("transaction");
      // One upstream database, capped per PgBouncer pod: the cap is what the arithmetic counts.
      expect(Object.keys(ini.databases ?? {})).toEqual([new URL(PGBOUNCER_URL).pathname.slice(1)]);
      expect(Number(settings.max_db_connections)).toBeGreaterThan(0);
      expect(Number(settings.max_db_connections)).toBe(
        Number(settings.default_pool_size) + Number(settings.reserve_pool_size),
      );
      // Named prepared statements (src/db/prepared.ts, drizzle's .prepare()) need PgBouncer to track them.
      expect(Number(settings.max_prepared_statements)).toBeGreaterThan(0);

      // What node-postgres puts in the startup packet for the service's pools: PgBouncer refuses a parameter it
      // neither tracks by default nor ignores, and cannot pass on one PostgreSQL does not report: each is
      // ignored, and the database's connect_query sets it on every server session instead.
      const startup: Record<string, string> = (
        new pg.Client({
          connectionString: withPinnedIsolation(POSTGRES_URL),
          statement_timeout: defaultPostgresTimeouts.statementMs,
          lock_timeout: defaultPostgresTimeouts.lockMs,
          idle_in_transaction_session_timeout: defaultPostgresTimeouts.idleInTransactionMs,
        }) as unknown as { getStartupConf(): Record<string, string> }
      ).getStartupConf();
      const inOptions = Object.fromEntries(
        [...(startup.options ?? "").matchAll(/-c\s*(\w+)=((?:\\.|\S)+)/g)].map((m) => [
          m[1]!,
          m[2]!.replace(/\\(.)/g, "$1"),
        ]),
      );
      const sent: Record<string, string> = { ...startup, ...inOptions };
      for (const key of ["user", "database", "options"]) delete sent[key];
      // PgBouncer's own tracked parameters pass; every other one must be ignored, and set by connect_query.
      // (The write pool's values: the read pool's 5 s statement time-out is 10 s behind PgBouncer, README.)
      const tracked = ["client_encoding", "datestyle", "timezone", "standard_conforming_strings", "application_name"];
      const untracked = Object.keys(sent).filter((name) => !tracked.includes(name.toLowerCase()));
      expect(untracked).toContain("default_transaction_isolation");
      expect(untracked).toContain("statement_timeout");
      const ignored = settings.ignore_startup_parameters?.split(/\s*,\s*/) ?? [];
      expect(ignored.sort()).toEqual(untracked.sort());
      const connectQuery = /connect_query='([^']*)'/.exec(Object.values(ini.databases!)[0]!)?.[1] ?? "";
      for (const name of untracked) {
        expect(connectQuery, name).toContain(
          name === "default_transaction_isolation"
            ? `SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL ${sent[name]!.toUpperCase()}`
            : `SET ${name} = ${sent[name]}`,
        );
      }

      // Its host is the ExternalName Service; its port the one the chat pods' URL names.
      expect(Object.values(ini.databases!)[0]).toMatch(/^host=listings-chat-postgres port=5432 dbname=chat /);
      expect(byKind(manifests, "Service", "listings-chat-postgres").spec.type).toBe("ExternalName");
      expect(settings.listen_port).toBe(String(container.ports[0].containerPort));
      expect(byKind(manifests, "Service", "listings-chat-pgbouncer").spec.selector).toEqual(
        deployment.spec.selector.matchLabels,
      );
      // Its files: the ConfigMap at the path the command reads, auth_file from its Secret.
      expect(container.command).toEqual(["/usr/bin/pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]);
      const mounts = Object.fromEntries(container.volumeMounts.map((m: any) => [m.name, m.mountPath]));
      expect(mounts.config).toBe("/etc/pgbouncer");
      expect(settings.auth_file).toBe(`${mounts.secrets}/userlist.txt`);
      expect(settings.auth_type).toBe("scram-sha-256");
      // A pinned PgBouncer of 1.21 or later (max_prepared_statements).
      const [major, minor] = /:(\d+)\.(\d+)\.\d+$/.exec(container.image)!.slice(1).map(Number);
      expect(major! > 1 || minor! >= 21, container.image).toBe(true);
    });

    it("hardens PgBouncer like the services, and lets only the chat pods reach it", () => {
      expect(deployment.spec.template.spec.securityContext).toMatchObject({ runAsNonRoot: true });
      expect(deployment.spec.template.spec.automountServiceAccountToken).toBe(false);
      expect(container.securityContext).toMatchObject({
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ["ALL"] },
      });
      // Nothing written: no Unix socket, no pid or log file.
      expect(settings.unix_socket_dir).toBe("");
      expect(settings.pidfile ?? settings.logfile).toBeUndefined();
      for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
        expect(container[probe].tcpSocket, probe).toEqual({ port: "postgres" });
      }
      expect(container.resources.requests.cpu).toBeDefined();
      expect(container.resources.limits.memory).toBeDefined();
      expect(byKind(manifests, "PodDisruptionBudget", "listings-chat-pgbouncer").spec.selector).toEqual(
        deployment.spec.selector,
      );
      const policy = byKind(manifests, "NetworkPolicy", "listings-chat-pgbouncer-from-chat-only");
      expect(policy.spec.podSelector.matchLabels).toEqual(deployment.spec.selector.matchLabels);
      expect(policy.spec.ingress).toEqual([
        {
          from: [{ podSelector: { matchLabels: chat.spec.selector.matchLabels } }],
          ports: [{ port: Number(settings.listen_port), protocol: "TCP" }],
        },
      ]);
    });
  }

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
