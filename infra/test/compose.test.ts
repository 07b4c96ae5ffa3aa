/**
 * docker-compose.yml as Debian's docker-compose reads it (`docker-compose config`; `.ci/run` installs it
 * when missing): with the variables of `.env.example` it is valid, and it says what the code and
 * CONTRACT.md say (ports, the services' connection as the least-privileged role, read-only containers,
 * a PostgreSQL max_connections that the chat instances' pools fit in); without a secret it refuses to run and
 * names the variable. Webhooks (CONTRACT §9) are off with .env.example and on with WEBHOOK_URL and
 * WEBHOOK_SECRET from the environment.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
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
    expect(readFileSync(`${root}infra/postgres/10-chat-role.sh`, "utf8")).toMatch(
      /CREATE ROLE chat_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE/,
    );
    // Long or short syntax, depending on the docker-compose version: source:target[:mode].
    const targets = postgres.volumes.map((v: { target?: string } | string) =>
      typeof v === "string" ? v.split(":")[1] : v.target,
    );
    expect(targets).toContain("/docker-entrypoint-initdb.d");
    // Only the edge is published.
    expect(nginx.ports).toHaveLength(1);
    expect(Object.values(config.services).filter((s: any) => s.ports)).toHaveLength(1);
  });

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
    for (const secret of ["INTERNAL_TOKEN", "WS_TOKEN_SECRET", "CHAT_DB_PASSWORD", "DATABASE_URL"]) {
      const env = exampleEnv();
      delete env[secret];
      const result = composeConfig(env);
      expect(result.status, secret).not.toBe(0);
      expect(result.stderr).toContain(secret);
    }
  });
});
