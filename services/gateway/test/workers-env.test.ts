import { describe, expect, it } from "vitest";
import { ConfigError, loadGatewayConfig } from "../src/env.ts";
import { workerNumberOf, workersToSupervise } from "../src/workers/role.ts";

const redis = { REDIS_URL: "redis://127.0.0.1:6379" };

describe("GATEWAY_WORKERS", () => {
  it("is 1 when not given: one process, as before", () => {
    const config = loadGatewayConfig({});
    expect(config.workers).toBe(1);
    expect(config.upstreamUpgrades).toEqual({ inFlightMax: 32, queueMax: 2_048, maxWaitMs: 3_000 });
  });

  it("takes a whole number from 1 to 256, with Redis", () => {
    expect(loadGatewayConfig({ ...redis, GATEWAY_WORKERS: "4" }).workers).toBe(4);
    expect(loadGatewayConfig({ ...redis, GATEWAY_WORKERS: " 256 " }).workers).toBe(256);
    expect(loadGatewayConfig({ GATEWAY_WORKERS: "1" }).workers).toBe(1);
  });

  it.each(["0", "257", "two", "1.5", "-2", ""])("refuses %j with a ConfigError naming it", (value) => {
    expect(() => loadGatewayConfig({ ...redis, GATEWAY_WORKERS: value })).toThrow(ConfigError);
    expect(() => loadGatewayConfig({ ...redis, GATEWAY_WORKERS: value })).toThrow(
      /^invalid GATEWAY_WORKERS: must be a whole number from 1 to 256$/,
    );
  });

  it("more than 1 needs REDIS_URL: in memory, each worker would count a user's sockets apart", () => {
    expect(() => loadGatewayConfig({ GATEWAY_WORKERS: "2" })).toThrow(ConfigError);
    expect(() => loadGatewayConfig({ GATEWAY_WORKERS: "2" })).toThrow(
      /GATEWAY_WORKERS=2 needs REDIS_URL: .*MAX_SOCKETS_PER_USER.*used ws-tokens/,
    );
  });

  it("gives each worker its share of the upgrades an instance is sent at once, and of the queue", () => {
    const config = loadGatewayConfig({
      ...redis,
      GATEWAY_WORKERS: "3",
      UPSTREAM_UPGRADES_IN_FLIGHT: "32",
      UPSTREAM_UPGRADE_QUEUE_MAX: "0",
    });
    expect(config.upstreamUpgrades).toEqual({ inFlightMax: 11, queueMax: 0, maxWaitMs: 3_000 });
    expect(loadGatewayConfig({ ...redis, GATEWAY_WORKERS: "64" }).upstreamUpgrades?.inFlightMax).toBe(1);
  });
});

describe("main.ts's choice before anything loads (workers/role.ts)", () => {
  it("supervises only when GATEWAY_WORKERS is a whole number above 1", () => {
    expect(workersToSupervise({})).toBeUndefined();
    expect(workersToSupervise({ GATEWAY_WORKERS: "1" })).toBeUndefined();
    expect(workersToSupervise({ GATEWAY_WORKERS: " 2 " })).toBe(2);
    // Anything else is served by one process, whose env.ts refuses it with its message.
    for (const value of ["0", "two", "1.5", "-2", "", "1e3"])
      expect(workersToSupervise({ GATEWAY_WORKERS: value })).toBeUndefined();
  });

  it("knows a worker by its --gateway-worker argument", () => {
    expect(workerNumberOf(["node", "main.ts"])).toBeUndefined();
    expect(workerNumberOf(["node", "main.ts", "--gateway-worker=3"])).toBe(3);
    expect(workerNumberOf(["node", "main.ts", "--gateway-worker=0"])).toBeUndefined();
    expect(workerNumberOf(["node", "main.ts", "--gateway-worker=x"])).toBeUndefined();
  });
});
