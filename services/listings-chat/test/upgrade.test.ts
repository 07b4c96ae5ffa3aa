/**
 * Admission on the chat port: an instance with too many sockets still waiting for their greeting refuses
 * new upgrades at once, with 503 and a Retry-After spread over 1–3 s, and never hands them to the hub.
 */
import type { IncomingMessage } from "node:http";
import { Duplex } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { WebSocketServer } from "ws";
import type { Hub } from "../src/hub/hub.ts";
import { createUpgradeHandler } from "../src/hub/upgrade.ts";

function upgradeRequest(): IncomingMessage {
  return {
    url: "/ws/chat",
    headers: { "x-internal-token": "secret", "x-user-id": "7" },
  } as unknown as IncomingMessage;
}

/** A socket that records what is written to it. */
function recordingSocket() {
  const written: string[] = [];
  const socket = new Duplex({
    read() {},
    write(chunk, _encoding, callback) {
      written.push(String(chunk));
      callback();
    },
  });
  return { socket, text: () => written.join("") };
}

function handlerWith(opening: number, random: number, isSuspended?: (userId: number) => Promise<boolean>) {
  const upgraded: number[] = [];
  const refusedBusy: number[] = [];
  const wss = {
    handleUpgrade: () => upgraded.push(1),
  } as unknown as WebSocketServer;
  const hub = { opening: () => opening, attach: () => {} } as unknown as Hub;
  const handle = createUpgradeHandler({
    wss,
    hub,
    checkInternalToken: (presented) => presented === "secret",
    isShuttingDown: () => false,
    connectQueueMax: 3,
    onBusy: () => refusedBusy.push(1),
    log: pino({ level: "silent" }),
    random: () => random,
    isSuspended,
  });
  return { handle, upgraded, refusedBusy };
}

/** Lets the suspension check's promise settle. */
const settled = () => new Promise((resolve) => setImmediate(resolve));

describe("admission of upgrades", () => {
  it("accepts while fewer sockets than the limit wait for their greeting", async () => {
    const { handle, upgraded, refusedBusy } = handlerWith(2, 0);
    const { socket, text } = recordingSocket();
    handle(upgradeRequest(), socket, Buffer.alloc(0));
    await settled();
    expect(upgraded).toHaveLength(1);
    expect(refusedBusy).toHaveLength(0);
    expect(text()).toBe("");
  });

  it.each([
    [0, "1"],
    [0.5, "2"],
    [0.99, "3"],
  ])(
    "refuses at once with 503 instance_busy when the queue is full (draw %s → Retry-After %s)",
    async (draw, retryAfter) => {
      const { handle, upgraded, refusedBusy } = handlerWith(3, draw);
      const { socket, text } = recordingSocket();
      handle(upgradeRequest(), socket, Buffer.alloc(0));
      await settled();
      expect(upgraded).toHaveLength(0);
      expect(refusedBusy).toHaveLength(1);
      expect(text()).toMatch(/^HTTP\/1\.1 503 /);
      expect(text()).toContain(`Retry-After: ${retryAfter}\r\n`);
      expect(text()).toContain('"code":"instance_busy"');
    },
  );

  it("counts the upgrades waiting for their suspension check with the greetings pending", async () => {
    // Two greetings pending, limit 3: one upgrade may wait for its check; the next is refused meanwhile.
    let answer: (suspended: boolean) => void = () => {};
    const check = () => new Promise<boolean>((resolve) => (answer = resolve));
    const { handle, upgraded, refusedBusy } = handlerWith(2, 0, check);
    handle(upgradeRequest(), recordingSocket().socket, Buffer.alloc(0));
    const second = recordingSocket();
    handle(upgradeRequest(), second.socket, Buffer.alloc(0));
    expect(refusedBusy).toHaveLength(1);
    expect(second.text()).toMatch(/^HTTP\/1\.1 503 /);
    answer(false);
    await settled();
    expect(upgraded).toHaveLength(1);
    // Answered: no longer counted.
    const third = recordingSocket();
    handle(upgradeRequest(), third.socket, Buffer.alloc(0));
    expect(refusedBusy).toHaveLength(1);
  });
});
