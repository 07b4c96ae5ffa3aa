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

function handlerWith(opening: number, random: number, isSuspended?: (userId: number) => boolean) {
  const upgraded: number[] = [];
  const refusedBusy: number[] = [];
  const attached: number[] = [];
  const closed: number[] = [];
  // The accepted socket: what the handler does with it (attach it, or close it) is recorded.
  const ws = { close: (code: number) => closed.push(code) };
  const wss = {
    handleUpgrade: (_req: unknown, _socket: unknown, _head: unknown, done: (socket: unknown) => void) => {
      upgraded.push(1);
      done(ws);
    },
  } as unknown as WebSocketServer;
  const hub = {
    opening: () => opening,
    attach: (_ws: unknown, userId: number) => attached.push(userId),
  } as unknown as Hub;
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
  return { handle, upgraded, refusedBusy, attached, closed };
}

describe("admission of upgrades", () => {
  it("accepts while fewer sockets than the limit wait for their greeting", () => {
    const { handle, upgraded, refusedBusy, attached } = handlerWith(2, 0);
    const { socket, text } = recordingSocket();
    handle(upgradeRequest(), socket, Buffer.alloc(0));
    expect(upgraded).toHaveLength(1);
    expect(refusedBusy).toHaveLength(0);
    expect(text()).toBe("");
    expect(attached).toEqual([7]);
  });

  it.each([
    [0, "1"],
    [0.5, "2"],
    [0.99, "3"],
  ])("refuses at once with 503 instance_busy when the queue is full (draw %s → Retry-After %s)", (draw, retryAfter) => {
    const { handle, upgraded, refusedBusy } = handlerWith(3, draw);
    const { socket, text } = recordingSocket();
    handle(upgradeRequest(), socket, Buffer.alloc(0));
    expect(upgraded).toHaveLength(0);
    expect(refusedBusy).toHaveLength(1);
    expect(text()).toMatch(/^HTTP\/1\.1 503 /);
    expect(text()).toContain(`Retry-After: ${retryAfter}\r\n`);
    expect(text()).toContain('"code":"instance_busy"');
  });

  it("accepts a suspended user's upgrade and closes it with 4003 before the hub sees it", () => {
    const { handle, upgraded, refusedBusy, attached, closed } = handlerWith(0, 0, (userId) => userId === 7);
    handle(upgradeRequest(), recordingSocket().socket, Buffer.alloc(0));
    expect(upgraded).toHaveLength(1);
    expect(refusedBusy).toHaveLength(0);
    expect(attached).toEqual([]);
    expect(closed).toEqual([4003]);
  });
});
