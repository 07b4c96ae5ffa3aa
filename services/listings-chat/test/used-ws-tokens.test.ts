/**
 * The instance's record of the ws-tokens it opened sockets with (hub/used-ws-tokens.ts): one socket per
 * token id, ids forgotten once their token has expired (bounded memory), and on the chat port a token is
 * only used up by an upgrade nothing else refuses.
 */
import type { IncomingMessage } from "node:http";
import { Duplex } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { WebSocketServer } from "ws";
import type { Hub } from "../src/hub/hub.ts";
import { createUpgradeHandler } from "../src/hub/upgrade.ts";
import { createUsedWsTokens } from "../src/hub/used-ws-tokens.ts";

describe("used ws-tokens", () => {
  it("lets each id through once until its expiry and the clock skew have passed", () => {
    let now = 1_000_000;
    const used = createUsedWsTokens({ clockSkewMs: 30_000, now: () => now });
    expect(used.claim("a", now + 60_000)).toBe(true);
    expect(used.claim("a", now + 60_000)).toBe(false);
    expect(used.claim("b", now + 60_000)).toBe(true);
    now += 60_000 + 29_000;
    expect(used.claim("a", now)).toBe(false);
    now += 1_000;
    // Expired for every gateway's clock: the gateways refuse the token themselves now.
    expect(used.claim("a", now + 60_000)).toBe(true);
  });

  it("holds only the ids of one token lifetime: 10,000 upgrades a minute stay near 15,000 ids", () => {
    let now = 0;
    const used = createUsedWsTokens({ clockSkewMs: 30_000, now: () => now });
    let largest = 0;
    for (let i = 0; i < 100_000; i++) {
      now += 6; // 10,000 a minute, each token living 60 s
      used.claim(`t-${i}`, now + 60_000);
      largest = Math.max(largest, used.size());
    }
    // 90 s of ids (life and skew) plus at most one sweep interval (10 s): 100 s at 10,000 a minute.
    expect(largest).toBeLessThanOrEqual(Math.ceil(100_000 / 6) + 1);
    expect(used.size()).toBeGreaterThan(14_000);
  });

  it("keeps no id longer than the longest ws-token life, whatever expiry it comes with", () => {
    let now = 0;
    const used = createUsedWsTokens({ maxHoldMs: 3_630_000, now: () => now });
    expect(used.claim("far", 100 * 365 * 86_400_000)).toBe(true);
    now = 3_630_000;
    expect(used.claim("far", now + 60_000)).toBe(true);
  });
});

describe("the chat port and ws-token ids", () => {
  const request = (headers: Record<string, string>) =>
    ({
      url: "/ws/chat",
      headers: { "x-internal-token": "secret", "x-user-id": "7", ...headers },
    }) as unknown as IncomingMessage;

  function socket() {
    const written: string[] = [];
    const duplex = new Duplex({
      read() {},
      write(chunk, _encoding, callback) {
        written.push(String(chunk));
        callback();
      },
    });
    return { duplex, status: () => Number(/^HTTP\/1\.1 (\d+)/.exec(written.join(""))?.[1] ?? 101) };
  }

  it("uses a token up only when the upgrade is taken: a busy refusal (503) leaves it usable", async () => {
    let opening = 5;
    const upgraded: number[] = [];
    const handle = createUpgradeHandler({
      wss: { handleUpgrade: () => upgraded.push(1) } as unknown as WebSocketServer,
      hub: { opening: () => opening, attach: () => {} } as unknown as Hub,
      checkInternalToken: (presented) => presented === "secret",
      isShuttingDown: () => false,
      connectQueueMax: 3,
      log: pino({ level: "silent" }),
    });
    const token = { "x-ws-token-id": "0b7c6c1e-5d7e-4c0f-9a52-2a3c1f3e8d10", "x-ws-token-expires": "9999999999" };
    const busy = socket();
    await handle(request(token), busy.duplex, Buffer.alloc(0));
    expect(busy.status()).toBe(503);
    opening = 0;
    const taken = socket();
    await handle(request(token), taken.duplex, Buffer.alloc(0));
    expect(upgraded).toHaveLength(1);
    const again = socket();
    await handle(request(token), again.duplex, Buffer.alloc(0));
    expect(again.status()).toBe(409);
    expect(upgraded).toHaveLength(1);
  });
});
