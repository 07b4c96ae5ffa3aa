/**
 * A ws-token opens one socket in the whole deployment (CONTRACT §10), here without Redis: two gateways, each
 * with its own in-memory replay store, in front of the one chat instance (CONTRACT §1). The gateway sends the
 * token's id and expiry on the internal hop, the instance refuses an id it has seen (409), and the gateway
 * answers its client 401.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  describeOutcome,
  type E2EChat,
  type E2EGateway,
  type E2ESocket,
  randomSecret,
  rawConnection,
  startE2EChat,
  startE2EGateway,
  tryUpgrade,
  type UpgradeOutcome,
  upgradeHead,
} from "./support/e2e.ts";

async function opened(outcome: UpgradeOutcome): Promise<E2ESocket> {
  if (outcome.kind !== "open") throw new Error(`expected a socket, got: ${describeOutcome(outcome)}`);
  await outcome.socket.waitFor((f) => f.type === "connected");
  return outcome.socket;
}

function expectUsedUp(outcome: UpgradeOutcome) {
  if (outcome.kind !== "refused") throw new Error(`expected a 401, got: ${describeOutcome(outcome)}`);
  expect(outcome.status).toBe(401);
  expect(outcome.body).toEqual({
    error: { code: "unauthorized", message: "the ws-token was already used: fetch a new one from /api/v2/ws-token" },
  });
  expect(outcome.opened()).toBe(false);
}

describe("a ws-token across two gateways without Redis, in front of one instance", () => {
  const internalToken = randomSecret();
  // Gateways of one deployment share WS_TOKEN_SECRET: a token issued at one is good at the other.
  const wsTokens = { secret: randomSecret(), ttlSeconds: 60 };
  let chat: E2EChat;
  let a: E2EGateway;
  let b: E2EGateway;

  beforeAll(async () => {
    chat = await startE2EChat({ database: { inMemory: true }, internalToken });
    a = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken, config: { wsTokens } });
    b = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken, config: { wsTokens } });
  });

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await chat?.stop();
  });

  it("opens one socket: the same token at the other gateway gets 401, while the first socket is open and after", async () => {
    const token = await a.wsToken(await a.devToken(901));
    const first = await opened(await tryUpgrade(`${a.wsUrl}?token=${token}`));
    expectUsedUp(await tryUpgrade(`${b.wsUrl}?token=${token}`));
    await first.close();
    expectUsedUp(await tryUpgrade(`${b.wsUrl}?token=${token}`));
    // Each gateway's own check still holds: at the first gateway, its own replay store refuses it.
    expectUsedUp(await tryUpgrade(`${a.wsUrl}?token=${token}`));
    // The refusals cost nobody else anything: a fresh token opens a socket at the second gateway.
    const next = await opened(await tryUpgrade(`${b.wsUrl}?token=${await b.wsToken(await b.devToken(901))}`));
    await next.close();
  });

  it("of two upgrades racing with one token through both gateways, exactly one opens", async () => {
    for (let round = 0; round < 10; round++) {
      const token = await a.wsToken(await a.devToken(902));
      const outcomes = await Promise.all([
        tryUpgrade(`${a.wsUrl}?token=${token}`),
        tryUpgrade(`${b.wsUrl}?token=${token}`),
      ]);
      const sockets = outcomes.filter((o) => o.kind === "open");
      expect(sockets, outcomes.map(describeOutcome).join("; ")).toHaveLength(1);
      expectUsedUp(outcomes.find((o) => o.kind !== "open")!);
      await (await opened(sockets[0]!)).close();
    }
  });

  it("takes the token's id from the token alone: a client's X-Ws-Token-Id is not passed on", async () => {
    // Were the client's header passed on, the second socket would be refused as a repeat of the first.
    const headers = { "X-Ws-Token-Id": "chosen-by-the-client", "X-Ws-Token-Expires": "9999999999" };
    const sockets: E2ESocket[] = [];
    for (const gateway of [a, b]) {
      const token = await gateway.wsToken(await gateway.devToken(903));
      sockets.push(await opened(await tryUpgrade(`${gateway.wsUrl}?token=${token}`, { headers })));
    }
    for (const socket of sockets) await socket.close();
  });

  it("the instance itself refuses a token id it has seen with 409, and a malformed one with 400", async () => {
    /** The internal hop as a gateway writes it, straight to the chat port. */
    const hop = async (token: Record<string, string>) => {
      const connection = await rawConnection(chat.port);
      const headers = { "X-Internal-Token": internalToken, "X-User-Id": "904", ...token };
      await connection.write(`${upgradeHead("/ws/chat", headers)}\r\n`);
      return connection;
    };
    /** A refused hop: its answer, once the instance has closed the connection. */
    const refused = async (token: Record<string, string>) => (await hop(token)).answer();
    const token = { "X-Ws-Token-Id": randomUUID(), "X-Ws-Token-Expires": String(Math.floor(Date.now() / 1000) + 60) };
    // The first is a 101, and its socket stays open.
    const first = await hop(token);
    await new Promise<void>((resolve) =>
      first.socket.on("data", (chunk: Buffer) => {
        if (chunk.toString().startsWith("HTTP/1.1 101")) resolve();
      }),
    );
    const again = await refused(token);
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("conflict");
    const badId = await refused({ ...token, "X-Ws-Token-Id": "not an id!" });
    expect(badId.status).toBe(400);
    expect(badId.body.error.message).toMatch(/X-Ws-Token-Id/);
    const noExpiry = await refused({ "X-Ws-Token-Id": randomUUID() });
    expect(noExpiry.status).toBe(400);
    expect(noExpiry.body.error.message).toMatch(/X-Ws-Token-Expires/);
    first.socket.destroy();
  });
});
