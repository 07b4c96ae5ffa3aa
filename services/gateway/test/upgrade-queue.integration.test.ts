/**
 * The gateway's upgrade queue with a real gateway in front of a stand-in instance that never answers an
 * upgrade, and one slot per instance: the first upgrade holds the slot, the next waits in the queue.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  type E2EGateway,
  http,
  pollUntil,
  randomSecret,
  rawConnection,
  sleep,
  startE2EGateway,
  upgradeHead,
} from "./support/e2e.ts";
import { type MisbehavingInstance, startMisbehavingInstance } from "./support/misbehaving-instance.ts";

const internalToken = randomSecret();
let instance: MisbehavingInstance | undefined;
let gateway: E2EGateway | undefined;

afterEach(async () => {
  await gateway?.stop();
  await instance?.close();
  gateway = undefined;
  instance = undefined;
});

async function setUp() {
  instance = await startMisbehavingInstance("hang");
  gateway = await startE2EGateway({
    chatUpstreams: [instance.url],
    internalToken,
    config: {
      upstreamConnectTimeoutMs: 10_000,
      upstreamUpgrades: { inFlightMax: 1, queueMax: 10, maxWaitMs: 60_000 },
      shutdownDrainMs: 3_000,
    },
  });
  return { instance, gateway };
}

/** Sends user `userId`'s upgrade on a raw connection of its own (no reading of the answer yet). */
async function upgradeAs(gw: E2EGateway, userId: number) {
  const token = await gw.wsToken(gw.accessToken(userId));
  const connection = await rawConnection(gw.gateway.port);
  await connection.write(`${upgradeHead(`/ws/chat?token=${token}`)}\r\n`);
  return connection;
}

async function waiting(gw: E2EGateway): Promise<number> {
  const metrics = await http(gw.baseUrl, "GET", "/metrics", { headers: { "x-internal-token": internalToken } });
  return Number(/^listings_chat_gateway_ws_upgrades_waiting\{[^}]*\} (\d+)$/m.exec(metrics.text)?.[1] ?? Number.NaN);
}

const upgradesSeen = (stand: MisbehavingInstance) =>
  stand.seen.filter((line) => line.startsWith("GET /ws/chat")).length;

describe("the gateway's upgrade queue", () => {
  it("lets a client that gives up while it waits (a half-close) leave the queue: it is never sent on", async () => {
    const { instance: stand, gateway: gw } = await setUp();
    const holding = await upgradeAs(gw, 1);
    expect(await pollUntil(() => upgradesSeen(stand) === 1, 5_000)).toBe(true);
    const waiter = await upgradeAs(gw, 2);
    expect(await pollUntil(async () => (await waiting(gw)) === 1, 5_000)).toBe(true);

    waiter.socket.end(); // the browser gave up: its side closes, the socket stays half-open
    expect(await pollUntil(async () => (await waiting(gw)) === 0, 5_000)).toBe(true);
    // The slot comes free (its client leaves too): nothing is left in the queue to take it.
    holding.socket.destroy();
    await sleep(300);
    expect(upgradesSeen(stand)).toBe(1);
    expect(gw.gateway.openPipes()).toBe(0);
  });

  it("answers upgrades still waiting with 503 shutting_down when the gateway drains", async () => {
    const { gateway: gw } = await setUp();
    const holding = await upgradeAs(gw, 1);
    const waiter = await upgradeAs(gw, 2);
    expect(await pollUntil(async () => (await waiting(gw)) === 1, 5_000)).toBe(true);
    const stopping = gw.gateway.stop();
    const answer = await waiter.answer(2_000);
    expect(answer.status).toBe(503);
    expect(answer.body?.error?.code).toBe("shutting_down");
    holding.socket.destroy();
    await stopping;
  });
});
