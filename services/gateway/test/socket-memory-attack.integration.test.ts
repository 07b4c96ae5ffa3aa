/**
 * The memory attack of issue 22 against real processes (a chat instance and a gateway in front of it): a
 * user stops reading their socket, asks for a replay of a long stream so that the replay waits on a socket
 * that never drains, then sends valid frames as fast as they can, with an unsolicited pong now and then to
 * look alive. Before the bounded queue, every frame was chained onto the connection's promise queue: 100,000
 * typing frames added 21 MB to the instance, and the socket was never closed. Now the instance stops reading
 * the socket after about 32 frames, and the replay page it cannot deliver closes the socket with 1013 after
 * 30 s. What is measured: the RSS of both processes (/proc) before and during the attack, and the close.
 */
import { randomBytes, randomUUID } from "node:crypto";
import jwt from "jsonwebtoken";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import { http, inWaves, pollUntil, sleep } from "./support/e2e.ts";
import { type ServiceProcess, startChatProcess, startGatewayProcess } from "./support/processes.ts";

const secret = () => randomBytes(24).toString("hex");
const internalToken = secret();
const jwtSecret = secret();
const accessToken = (userId: number) =>
  jwt.sign({ sub: String(userId) }, jwtSecret, { algorithm: "HS256", expiresIn: 600 });
const bearer = (userId: number) => ({ authorization: `Bearer ${accessToken(userId)}` });

const ATTACKER = 901;
const SELLER = 902;
/**
 * The stream the attacker asks to replay: 1,600 messages of 4,000 four-byte characters, about 26 MB of
 * frames, more than the kernel buffers of both hops (instance → gateway → client) can hold.
 */
const MESSAGES = 1_600;
const CONTENT = "😀".repeat(4_000);
/** Typing frames sent by the attacker: about 10 MB, 40 MB of RSS on the old code. */
const FRAMES = 200_000;

const postgres = databaseTargets().find((t) => t.name === "postgres");

describe("one socket cannot run an instance out of memory (issue 22)", () => {
  let chat: ServiceProcess;
  let gateway: ServiceProcess;
  let dropDatabase = async () => {};

  beforeAll(async () => {
    const database: Record<string, string> = {};
    if (postgres) {
      const db = await postgres.create();
      dropDatabase = db.drop;
      if (!("url" in db.options)) throw new Error("the PostgreSQL target has a URL");
      database.DATABASE_URL = db.options.url;
    }
    chat = await startChatProcess({ INTERNAL_TOKEN: internalToken, SEND_LIMIT_PER_MINUTE: "1000000", ...database });
    gateway = await startGatewayProcess({
      INTERNAL_TOKEN: internalToken,
      JWT_SECRET: jwtSecret,
      WS_TOKEN_SECRET: secret(),
      CHAT_UPSTREAMS: chat.baseUrl,
    });
  }, 60_000);

  afterAll(async () => {
    await gateway?.stop();
    await chat?.stop();
    await dropDatabase();
  });

  it("stops reading a stalled socket, closes it with 1013, and keeps both processes' memory bounded", async () => {
    // Seeded on the instance directly (the internal hop): the gateway is not what this measures.
    const internal = (userId: number) => ({ "x-internal-token": internalToken, "x-user-id": String(userId) });
    const opened = await http(chat.baseUrl, "POST", "/api/v1/chats", {
      headers: internal(ATTACKER),
      body: { listing_id: 1, seller_id: SELLER },
    });
    expect(opened.status).toBe(201);
    const chatId = opened.body.id as number;
    const sent = await inWaves(
      Array.from(
        { length: MESSAGES },
        () => () =>
          http(chat.baseUrl, "POST", `/api/v1/chats/${chatId}/messages`, {
            headers: internal(SELLER),
            body: { content: CONTENT, client_msg_id: randomUUID() },
          }),
      ),
      8,
    );
    expect(sent.every((answer) => answer.status === 201)).toBe(true);

    const { body } = await http(gateway.baseUrl, "POST", "/api/v2/ws-token", { headers: bearer(ATTACKER) });
    const socket = new WebSocket(`ws://127.0.0.1:${gateway.port}/ws/chat?token=${body.token}`, {
      autoPong: false,
    });
    socket.on("error", () => {});
    await new Promise<void>((resolve, reject) => {
      socket.once("message", () => resolve());
      socket.once("close", (code) => reject(new Error(`closed with ${code} before the greeting`)));
    });
    // The attacker stops reading, then asks for the whole stream a few times (later ones are refused now).
    socket.pause();
    for (let i = 0; i < 5; i++) socket.send(JSON.stringify({ type: "resume", after: 0 }));
    await sleep(2_000); // the replay fills every buffer on the way and stalls
    const before = { chat: chat.rssMiB(), gateway: gateway.rssMiB() };

    const typing = JSON.stringify({ type: "typing", chat_id: chatId, is_typing: true });
    for (let i = 0; i < FRAMES; i++) socket.send(typing);
    const peak = { ...before };
    const pongs = setInterval(() => socket.pong(), 1_000);
    const stats = async () =>
      (await http(chat.baseUrl, "GET", "/internal/chat/ws/stats", { headers: { "x-internal-token": internalToken } }))
        .body as { connections: number; slow_consumer_disconnects_total: number };
    let closed = false;
    try {
      // Within the replay page's 30 s and the 5 s the close handshake gets, plus a margin for a busy machine.
      closed = await pollUntil(
        async () => {
          peak.chat = Math.max(peak.chat, chat.rssMiB());
          peak.gateway = Math.max(peak.gateway, gateway.rssMiB());
          return (await stats()).connections === 0;
        },
        60_000,
        250,
      );
    } finally {
      clearInterval(pongs);
      socket.terminate();
    }
    const growth = { chat: peak.chat - before.chat, gateway: peak.gateway - before.gateway };
    console.log(
      `memory attack: ${FRAMES} frames sent; RSS before chat ${before.chat.toFixed(1)} MiB, gateway ${before.gateway.toFixed(1)} MiB; ` +
        `growth chat ${growth.chat.toFixed(1)} MiB, gateway ${growth.gateway.toFixed(1)} MiB; closed: ${closed}`,
    );
    expect(closed).toBe(true);
    expect((await stats()).slow_consumer_disconnects_total).toBeGreaterThanOrEqual(1);
    // The old code grew by ~40 MiB here (about 200 bytes per frame); the bound is a fifth of that.
    expect(growth.chat).toBeLessThan(8);
    // The gateway only pipes: its relay pauses the client when the instance stops reading (its own test,
    // relay.test.ts); this bound only says it did not take the frames in instead.
    expect(growth.gateway).toBeLessThan(16);
    expect(chat.alive() && gateway.alive()).toBe(true);
  }, 180_000);
});
