/**
 * A client that does not read cannot make the gateway buffer without bound (CONTRACT §10): the gateway as a
 * real process, between a stand-in instance that writes text frames as fast as its socket takes them and a
 * client that completes the upgrade and then never reads. The gateway's resident memory (/proc) stays flat
 * while the instance is held back by TCP: the relay stops reading the instance once the client's buffer is
 * full, so the bytes wait in the kernel's socket buffers, not in the gateway. Then the client reads, and gets
 * every byte the instance wrote.
 */
import { randomBytes } from "node:crypto";
import { connect as netConnect, type Socket } from "node:net";
import jwt from "jsonwebtoken";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { http, pollUntil, upgradeHead } from "./support/e2e.ts";
import { type MisbehavingInstance, startMisbehavingInstance } from "./support/misbehaving-instance.ts";
import { type ServiceProcess, startGatewayProcess } from "./support/processes.ts";

const secret = () => randomBytes(24).toString("hex");
const jwtSecret = secret();
const internalToken = secret();
/** What the instance offers: far more than any socket buffer on the way could hold. */
const OFFERED = 256 * 1024 * 1024;
/** The gateway may grow by this much at most while the flood is held back (Node's heap settling included). */
const RSS_BOUND_MIB = 32;

/** Opens /ws/chat through the gateway on a raw socket; resolves once the 101 is in, with the bytes after it. */
async function upgradeAndStopReading(port: number, token: string): Promise<{ socket: Socket; afterHead: number }> {
  const socket = netConnect({ port, host: "127.0.0.1" });
  socket.on("error", () => {});
  let received = Buffer.alloc(0);
  const afterHead = await new Promise<number>((resolve, reject) => {
    socket.once("error", reject);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf("\r\n\r\n");
      if (end === -1) return;
      socket.off("data", onData);
      // From here on, nothing is read: the kernel's receive buffer fills, then the gateway's send buffer.
      socket.pause();
      const status = received.subarray(0, received.indexOf("\r\n")).toString();
      if (!status.startsWith("HTTP/1.1 101")) reject(new Error(`the upgrade was answered: ${received}`));
      else resolve(received.length - end - 4);
    };
    socket.on("data", onData);
    socket.write(`${upgradeHead(`/ws/chat?token=${token}`)}\r\n`);
  });
  return { socket, afterHead };
}

describe("the gateway process between a flooding instance and a client that never reads", () => {
  let flood: MisbehavingInstance;
  let gateway: ServiceProcess;

  beforeAll(async () => {
    flood = await startMisbehavingInstance({ flood: OFFERED });
    gateway = await startGatewayProcess({
      INTERNAL_TOKEN: internalToken,
      JWT_SECRET: jwtSecret,
      WS_TOKEN_SECRET: secret(),
      CHAT_UPSTREAMS: flood.url,
    });
  }, 60_000);

  afterAll(async () => {
    await gateway?.stop();
    await flood?.close();
  });

  it("keeps its memory flat while the instance is held back, and loses nothing once the client reads", async () => {
    const access = jwt.sign({ sub: "77" }, jwtSecret, { algorithm: "HS256", expiresIn: 600 });
    const issued = await http(gateway.baseUrl, "POST", "/api/v2/ws-token", {
      headers: { authorization: `Bearer ${access}` },
    });
    expect(issued.status, issued.text).toBe(200);
    const baseline = gateway.rssMiB();
    const { socket, afterHead } = await upgradeAndStopReading(gateway.port, issued.body.token);

    // The flood goes on until every buffer on the way is full; then the instance's writes stop taking bytes.
    let peak = baseline;
    let last = -1;
    let unchangedSince = Date.now();
    const stalled = await pollUntil(
      () => {
        peak = Math.max(peak, gateway.rssMiB());
        const now = flood.flooded();
        if (now !== last) {
          last = now;
          unchangedSince = Date.now();
        }
        return now >= OFFERED || Date.now() - unchangedSince >= 1_500;
      },
      60_000,
      50,
    );
    expect(stalled).toBe(true);
    const held = flood.flooded();
    const growth = peak - baseline;
    console.log(
      `pipe memory: the instance wrote ${(held / 2 ** 20).toFixed(1)} MiB of ${OFFERED / 2 ** 20} MiB offered before ` +
        `it was held back; gateway RSS ${baseline.toFixed(1)} → peak ${peak.toFixed(1)} MiB (+${growth.toFixed(1)} MiB)`,
    );
    // Held back: the instance could not hand over what it offered, only what the socket buffers take.
    expect(held).toBeLessThan(OFFERED / 4);
    expect(growth).toBeLessThan(RSS_BOUND_MIB);
    // A pipe that was still open: the bytes were held, not dropped with the client.
    expect(gateway.alive()).toBe(true);
    expect(socket.destroyed).toBe(false);

    // The client reads now: the flood is stopped and every byte the instance wrote arrives, then the end.
    let received = afterHead;
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length;
    });
    const ended = new Promise<void>((resolve) => socket.once("end", () => resolve()));
    socket.resume();
    flood.stopFlood();
    await ended;
    expect(received).toBe(flood.flooded());
    socket.destroy();
    // Nothing is left open at the gateway once the client has gone.
    expect(await pollUntil(async () => (await pipesOpen(gateway)) === 0, 10_000)).toBe(true);
  }, 120_000);
});

/** The gateway's open pipes, from its metrics. */
async function pipesOpen(gateway: ServiceProcess): Promise<number> {
  const metrics = await http(gateway.baseUrl, "GET", "/metrics", { headers: { "x-internal-token": internalToken } });
  const value = /^listings_chat_gateway_ws_pipes (\d+)/m.exec(metrics.text)?.[1];
  if (value === undefined) throw new Error(`no listings_chat_gateway_ws_pipes in /metrics: ${metrics.status}`);
  return Number(value);
}
