/**
 * docker-compose.yml as Debian's docker-compose reads it (`docker-compose config`; `.ci/run` installs it
 * when missing): with the variables of `.env.example` it is valid, and it says what the code and
 * CONTRACT.md say (ports, the services' connection as the least-privileged role, read-only containers,
 * a PostgreSQL max_connections that the chat instances' pools fit in); without a secret it refuses to run and
 * names the variable. Webhooks (CONTRACT §9) are off with .env.example and on with WEBHOOK_URL and
 * WEBHOOK_SECRET from the environment. Photos (CONTRACT §11) go to MinIO: the chat instances load an s3
 * storage presigned for its published port, and its init job, run against a stand-in for mc, makes the bucket
 * they use and their key, with rights on that bucket only.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { loadGatewayConfig } from "../../services/gateway/src/env.ts";
import { CHAT_SECRET_VARIABLES, CHAT_VARIABLES, loadChatConfig } from "../../services/listings-chat/src/env.ts";
import { postgresSetting, sessionsPerChatInstance } from "./postgres-sessions.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

/** The variables of .env.example (comments and blank lines dropped). */
function exampleEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(`${root}.env.example`, "utf8").split("\n")) {
    const match = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (match) env[match[1]!] = match[2]!;
  }
  return env;
}

/**
 * A service's environment as its process gets it: a variable listed without a value (`NAME:`) is passed on
 * from compose's own environment when set there, and `docker-compose config` shows it as null when not.
 */
function processEnv(environment: Record<string, string | null>): Record<string, string> {
  return Object.fromEntries(Object.entries(environment).filter(([, v]) => v !== null)) as Record<string, string>;
}

/** `docker-compose config` with exactly `env` (no .env file of the machine's). */
function composeConfig(env: Record<string, string>) {
  const result = spawnSync(
    "docker-compose",
    ["--project-directory", root, "-f", `${root}docker-compose.yml`, "config"],
    {
      cwd: root,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
      encoding: "utf8",
    },
  );
  if (result.error) {
    throw new Error(`docker-compose is not installed (apt-get install docker-compose): ${result.error.message}`);
  }
  return result;
}

/** The host ports a service publishes (short syntax `host:container`, or the long syntax's objects). */
function publishedPorts(service: { ports?: Array<string | { published: number | string }> }): number[] {
  return (service.ports ?? []).map((p) =>
    Number(typeof p === "string" ? p.split("/")[0]!.split(":").at(-2) : p.published),
  );
}

/**
 * Runs the init job's command (its entrypoint's shell, its environment) with a stand-in `mc` that records each
 * call and keeps the policy file it is given; `attachFails` makes `admin policy attach` fail with that message.
 */
function runInitJob(init: any, attachFails?: string) {
  const dir = mkdtempSync(join(tmpdir(), "lc-minio-init-"));
  try {
    const log = join(dir, "calls.jsonl");
    writeFileSync(
      join(dir, "mc"),
      `#!${process.execPath}
const fs = process.getBuiltinModule("node:fs");
const args = process.argv.slice(2);
fs.appendFileSync(${JSON.stringify(log)}, JSON.stringify(args) + "\\n");
if (args.slice(0, 3).join(" ") === "admin policy create") fs.copyFileSync(args[5], ${JSON.stringify(join(dir, "policy.json"))});
if (args.slice(0, 3).join(" ") === "admin policy attach" && process.env.ATTACH_FAILS) {
  console.error("mc: <ERROR> Unable to make user/group policy association. " + process.env.ATTACH_FAILS);
  process.exit(1);
}
`,
    );
    chmodSync(join(dir, "mc"), 0o755);
    // Compose turns `$$` into `$` when it starts the container.
    const command = (init.command as string[]).map((part) => part.replaceAll("$$", "$"));
    const result = spawnSync(init.entrypoint[0], [...init.entrypoint.slice(1), ...command], {
      env: {
        ...processEnv(init.environment),
        PATH: `${dir}:${process.env.PATH ?? ""}`,
        ...(attachFails ? { ATTACH_FAILS: attachFails } : {}),
      },
      encoding: "utf8",
    });
    const calls = existsSync(log)
      ? readFileSync(log, "utf8")
          .trim()
          .split("\n")
          .map((line) => JSON.parse(line) as string[])
      : [];
    const policyFile = join(dir, "policy.json");
    const policy = existsSync(policyFile) ? JSON.parse(readFileSync(policyFile, "utf8")) : undefined;
    return { status: result.status, stderr: result.stderr, calls, policy };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("docker-compose.yml", () => {
  it("is valid with .env.example's variables and matches the services' ports, role and hardening", () => {
    const result = composeConfig(exampleEnv());
    expect(result.status, result.stderr).toBe(0);
    const config = parse(result.stdout) as { services: Record<string, any> };
    const { gateway, postgres, nginx } = config.services;
    const chats = ["listings-chat-1", "listings-chat-2"].map((name) => config.services[name]);
    expect(gateway.environment.GATEWAY_PORT).toBe("3000");
    expect(gateway.environment.CHAT_UPSTREAMS).toBe("http://listings-chat-1:8086,http://listings-chat-2:8086");
    // The gateway's environment as compose gives it loads in production: JWT_AUDIENCE (or JWT_ISSUER) included.
    const variables = Object.fromEntries(
      Object.entries(gateway.environment as Record<string, string | null>).filter(([, v]) => v !== null),
    ) as Record<string, string>;
    const gatewayConfig = loadGatewayConfig(variables);
    expect(gatewayConfig.production).toBe(true);
    expect(gatewayConfig.accessTokens).toMatchObject({ audience: "listings-chat", maxAgeSeconds: 86_400 });
    for (const chat of chats) {
      // Only variables the service reads (a secret's <NAME>_FILE included).
      const unknown = Object.keys(chat.environment).filter(
        (name) =>
          !CHAT_VARIABLES.includes(name) &&
          !(name.endsWith("_FILE") && (CHAT_SECRET_VARIABLES as readonly string[]).includes(name.slice(0, -5))),
      );
      expect(unknown).toEqual([]);
      expect(loadChatConfig(processEnv(chat.environment)).production).toBe(true);
      expect(chat.environment.CHAT_PORT).toBe("8086");
      expect(chat.environment.NODE_ENV).toBe("production");
      // The least-privileged role of infra/postgres/10-chat-role.sh, never the superuser.
      expect(new URL(chat.environment.DATABASE_URL).username).toBe("chat_app");
    }
    for (const app of [gateway, ...chats]) {
      expect(app.read_only).toBe(true);
      expect(app.cap_drop).toEqual(["ALL"]);
      expect(app.build.dockerfile).toBe("infra/Dockerfile");
    }
    // The store and its init job: pinned releases, no capabilities, no privilege gain.
    for (const name of ["minio", "minio-init"]) {
      const service = config.services[name];
      expect(service.image, name).toMatch(/^minio\/(minio|mc):RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ$/);
      expect(service.cap_drop, name).toEqual(["ALL"]);
      expect(service.security_opt, name).toContain("no-new-privileges:true");
    }
    expect(readFileSync(`${root}infra/postgres/10-chat-role.sh`, "utf8")).toMatch(
      /CREATE ROLE chat_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE/,
    );
    // Long or short syntax, depending on the docker-compose version: source:target[:mode].
    const targets = postgres.volumes.map((v: { target?: string } | string) =>
      typeof v === "string" ? v.split(":")[1] : v.target,
    );
    expect(targets).toContain("/docker-entrypoint-initdb.d");
    // Only the edge is published, and the photos' store, which browsers reach directly.
    expect(publishedPorts(nginx)).toEqual([8080]);
    expect(publishedPorts(config.services.minio)).toEqual([9000]);
    expect(
      Object.entries(config.services)
        .filter(([, s]: [string, any]) => s.ports)
        .map(([name]) => name)
        .sort(),
    ).toEqual(["minio", "nginx"]);
  });

  it("stores photos in MinIO: the instances' s3 storage, the bucket its init job makes, CORS for the edge", () => {
    const result = composeConfig(exampleEnv());
    expect(result.status, result.stderr).toBe(0);
    const { services } = parse(result.stdout) as { services: Record<string, any> };
    const { minio, nginx } = services;
    const init = services["minio-init"];
    const edgeOrigin = `http://localhost:${publishedPorts(nginx)[0]}`;
    const env = exampleEnv();

    for (const name of ["listings-chat-1", "listings-chat-2"]) {
      const chat = services[name];
      const config = loadChatConfig(processEnv(chat.environment));
      expect(config.storage).toEqual({
        kind: "s3",
        // The instances talk to MinIO by its service name; browsers get URLs for its published port.
        endpoint: "http://minio:9000",
        publicEndpoint: `http://localhost:${publishedPorts(minio)[0]}`,
        bucket: init.environment.S3_BUCKET,
        region: "us-east-1",
        // The key minio-init makes, never MinIO's root.
        accessKeyId: init.environment.S3_ACCESS_KEY_ID,
        secretAccessKey: init.environment.S3_SECRET_ACCESS_KEY,
        forcePathStyle: true,
      });
      expect(config.storage).toMatchObject({ accessKeyId: env.S3_ACCESS_KEY_ID });
      expect(chat.environment.S3_ACCESS_KEY_ID).not.toBe(minio.environment.MINIO_ROOT_USER);
      expect(config.photos).toEqual({ uploadMaxBytes: 10 * 1024 * 1024, concurrency: 2 });
      // No instance starts before the bucket and its key exist.
      expect(chat.depends_on["minio-init"]).toEqual({ condition: "service_completed_successfully" });
    }
    // MinIO's published port is the one its container listens on (`server /data`: 9000).
    expect(minio.command).toEqual(["server", "/data"]);
    expect(minio.ports.map((p: any) => (typeof p === "string" ? Number(p.split(":").at(-1)) : p.target))).toEqual([
      9000,
    ]);
    expect(minio.volumes.map((v: any) => (typeof v === "string" ? v.split(":")[1] : v.target))).toEqual(["/data"]);
    expect(minio.healthcheck.test).toEqual(["CMD", "mc", "ready", "local"]);
    expect(init.depends_on.minio).toEqual({ condition: "service_healthy" });
    expect(init.environment.MINIO_ROOT_USER).toBe(minio.environment.MINIO_ROOT_USER);
    expect(init.environment.MINIO_ROOT_PASSWORD).toBe(minio.environment.MINIO_ROOT_PASSWORD);
    // Browsers on the edge's pages PUT and GET cross-origin; MinIO answers CORS for that origin only.
    expect(minio.environment.MINIO_API_CORS_ALLOW_ORIGIN).toBe(edgeOrigin);
    // MinIO's limits on users (3 to 20 characters) and secrets (8 to 40): .env.example's placeholders pass.
    for (const user of [env.MINIO_ROOT_USER!, env.S3_ACCESS_KEY_ID!]) expect(user.length).toBeLessThanOrEqual(20);
    for (const secret of [env.MINIO_ROOT_PASSWORD!, env.S3_SECRET_ACCESS_KEY!]) {
      expect(secret.length).toBeGreaterThanOrEqual(8);
      expect(secret.length).toBeLessThanOrEqual(40);
    }

    // The init job: the bucket the instances use, a policy on it alone, and their user with that policy.
    const bucket = init.environment.S3_BUCKET;
    const run = runInitJob(init);
    expect(run.status, run.stderr).toBe(0);
    const alias = run.calls[0]!;
    expect(alias.slice(0, 3)).toEqual(["alias", "set", "store"]);
    expect(alias.slice(3)).toEqual([
      "http://minio:9000",
      minio.environment.MINIO_ROOT_USER,
      minio.environment.MINIO_ROOT_PASSWORD,
    ]);
    expect(run.calls).toContainEqual(["mb", "--ignore-existing", `store/${bucket}`]);
    expect(run.calls).toContainEqual([
      "admin",
      "user",
      "add",
      "store",
      init.environment.S3_ACCESS_KEY_ID,
      init.environment.S3_SECRET_ACCESS_KEY,
    ]);
    const create = run.calls.find((c) => c.slice(0, 3).join(" ") === "admin policy create")!;
    const attach = run.calls.find((c) => c.slice(0, 3).join(" ") === "admin policy attach")!;
    expect(attach).toEqual([
      "admin",
      "policy",
      "attach",
      "store",
      create[4],
      "--user",
      init.environment.S3_ACCESS_KEY_ID,
    ]);
    // What the service does (read, write, delete, list) on this bucket, nothing on any other.
    const statements = run.policy.Statement as Array<{ Effect: string; Action: string[]; Resource: string[] }>;
    expect(statements.every((st) => st.Effect === "Allow")).toBe(true);
    expect(statements.flatMap((st) => st.Resource).sort()).toEqual([
      `arn:aws:s3:::${bucket}`,
      `arn:aws:s3:::${bucket}/*`,
    ]);
    const actions = statements.flatMap((st) => st.Action);
    for (const action of ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]) {
      expect(actions).toContain(action);
    }
    expect(actions.filter((a) => a.includes("*"))).toEqual([]);
    // Run again (every `up`): an older mc that says the policy is already attached does not fail it; any other
    // error does.
    expect(runInitJob(init, "The specified policy change is already in effect.").status).toBe(0);
    expect(runInitJob(init, "Access Denied.").status).not.toBe(0);

    // Another bucket and origin from the environment reach the instances, the job and MinIO alike.
    const other = composeConfig({ ...env, S3_BUCKET: "photos-2", SITE_ORIGINS: "https://chat.example" });
    expect(other.status, other.stderr).toBe(0);
    const changed = (parse(other.stdout) as { services: Record<string, any> }).services;
    expect(changed["minio-init"].environment.S3_BUCKET).toBe("photos-2");
    expect(loadChatConfig(processEnv(changed["listings-chat-1"].environment)).storage).toMatchObject({
      bucket: "photos-2",
    });
    expect(changed.minio.environment.MINIO_API_CORS_ALLOW_ORIGIN).toBe("https://chat.example");
  }, 60_000);

  it("gives PostgreSQL a max_connections that every chat instance's sessions fit in", () => {
    const result = composeConfig(exampleEnv());
    expect(result.status, result.stderr).toBe(0);
    const { services } = parse(result.stdout) as { services: Record<string, any> };
    // `command` as a list, or as one string (split as the shell would, without quotes).
    const command = services.postgres.command ?? [];
    const maxConnections = postgresSetting(
      typeof command === "string" ? command.trim().split(/\s+/) : command,
      "max_connections",
    );
    const reserved = Number(services.postgres.labels?.["listings-chat.postgres-reserved-connections"]);
    expect(maxConnections, "postgres's command sets -c max_connections=N").toBeDefined();
    expect(reserved).toBeGreaterThanOrEqual(3); // superuser_reserved_connections' default at least
    const chats = Object.keys(services).filter((name) => name.startsWith("listings-chat-"));
    expect(chats).toHaveLength(2);
    let needed = reserved;
    for (const name of chats) {
      // The instance's own reading of its environment, defaults included.
      const sessions = sessionsPerChatInstance(loadChatConfig(processEnv(services[name].environment)));
      expect(sessions.pools).toBe(
        Number(services[name].environment.DATABASE_POOL_SIZE) +
          Number(services[name].environment.DATABASE_READ_POOL_SIZE),
      );
      needed += sessions.pools + sessions.migration;
    }
    expect(needed).toBeLessThanOrEqual(maxConnections!);
  });

  it("sends webhooks only with WEBHOOK_URL, signed with WEBHOOK_SECRET, and reaches a receiver on the host", () => {
    const chatConfigs = (env: Record<string, string>) => {
      const result = composeConfig(env);
      expect(result.status, result.stderr).toBe(0);
      const { services } = parse(result.stdout) as { services: Record<string, any> };
      const names = ["listings-chat-1", "listings-chat-2"];
      for (const name of names) expect(services[name].extra_hosts).toContain("host.docker.internal:host-gateway");
      return names.map((name) => () => loadChatConfig(processEnv(services[name].environment)));
    };
    // .env.example: none.
    for (const load of chatConfigs(exampleEnv())) expect(load().webhooks).toBeUndefined();
    // WEBHOOK_URL and WEBHOOK_SECRET from the environment (.env): both instances send, with the same secret.
    const secret = `whsec_${Buffer.alloc(32, 9).toString("base64")}`;
    const url = "http://host.docker.internal:4000/hooks/chat";
    const on = chatConfigs({ ...exampleEnv(), WEBHOOK_URL: url, WEBHOOK_SECRET: secret, NOTIFY_UNREAD_AFTER_S: "120" });
    for (const load of on) {
      expect(load().webhooks).toMatchObject({
        url,
        secret,
        timeoutMs: 5_000,
        maxAgeS: 86_400,
        notifyUnreadAfterS: 120,
      });
    }
    // The URL without the secret: the instances stop at start-up, naming it (production).
    for (const load of chatConfigs({ ...exampleEnv(), WEBHOOK_URL: url })) expect(load).toThrow(/WEBHOOK_SECRET/);
  });

  it("refuses to run without a secret, and names it", () => {
    for (const secret of [
      "INTERNAL_TOKEN",
      "WS_TOKEN_SECRET",
      "CHAT_DB_PASSWORD",
      "DATABASE_URL",
      "MINIO_ROOT_USER",
      "MINIO_ROOT_PASSWORD",
      "S3_ACCESS_KEY_ID",
      "S3_SECRET_ACCESS_KEY",
    ]) {
      const env = exampleEnv();
      delete env[secret];
      const result = composeConfig(env);
      expect(result.status, secret).not.toBe(0);
      expect(result.stderr).toContain(secret);
    }
    // One docker-compose (Python) start per secret: seconds each on a busy machine.
  }, 120_000);
});
