/**
 * The gateway end to end, over real sockets: browser-like clients → gateway → a real listings-chat
 * (PGlite; also PostgreSQL for the restart suite when DATABASE_URL is set). Every refusal is checked
 * as the plain HTTP answer it must be, before any 101.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ServerFrame } from "@listings-chat/shared";
import { Pool } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { DatabaseOptions } from "../../listings-chat/src/db/client.ts";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import {
  describeOutcome,
  type E2EChat,
  type E2EGateway,
  type E2ESocket,
  freePort,
  http,
  pollUntil,
  randomSecret,
  rawConnection,
  sleep,
  startE2EChat,
  startE2EGateway,
  tryUpgrade,
  type UpgradeOutcome,
  upgradeHead,
} from "./support/e2e.ts";

type NewMessage = Extract<ServerFrame, { type: "new_message" }>;
const isMessage =
  (content: string) =>
  (f: ServerFrame): f is NewMessage =>
    f.type === "new_message" && f.message.content === content;

/** A refusal before any upgrade: the exact status, a JSON error body, and never an `open`. */
async function expectRefused(outcome: UpgradeOutcome, status: number, code?: string) {
  if (outcome.kind !== "refused") throw new Error(`expected a ${status} refusal, got: ${describeOutcome(outcome)}`);
  expect(outcome.status).toBe(status);
  expect(outcome.headers["content-type"]).toMatch(/^application\/json/);
  expect(outcome.body).toEqual({
    error: { code: expect.stringMatching(/^[a-z]+(_[a-z]+)*$/), message: expect.any(String) },
  });
  expect(outcome.body.error.message.length).toBeGreaterThan(0);
  if (code) expect(outcome.body.error.code).toBe(code);
  // Give a stray 101 time to show up: it must not.
  await sleep(20);
  expect(outcome.opened()).toBe(false);
  return outcome;
}

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

const getConnections = (server: Server) =>
  new Promise<number>((resolve, reject) => server.getConnections((error, n) => (error ? reject(error) : resolve(n))));

describe("gateway end to end (PGlite)", () => {
  const internalToken = randomSecret();
  let chat: E2EChat;
  let gw: E2EGateway;

  beforeAll(async () => {
    chat = await startE2EChat({ database: { inMemory: true }, internalToken });
    gw = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken });
  });

  afterAll(async () => {
    await gw?.stop();
    await chat?.stop();
  });

  describe("live chat through the gateway", () => {
    it("dev token → ws-token → /ws/chat; REST and WS sends reach the other user; after= replays the rest", async () => {
      const alice = 101;
      const bob = 102;
      const aliceAccess = await gw.devToken(alice);
      const bobAccess = await gw.devToken(bob);

      const issued = await gw.api(aliceAccess, "POST", "/api/v2/ws-token");
      expect(issued.status).toBe(200);
      expect(issued.headers["cache-control"]).toBe("no-store");
      expect(issued.body).toEqual({ token: expect.any(String), expires_in: 60, ws_url: "/ws/chat" });

      const aliceOpen = await tryUpgrade(`${gw.wsUrl}?token=${issued.body.token}`);
      if (aliceOpen.kind !== "open") throw new Error(describeOutcome(aliceOpen));
      const aliceSocket = aliceOpen.socket;
      const bobOpen = await tryUpgrade(`${gw.wsUrl}?token=${await gw.wsToken(bobAccess)}`);
      if (bobOpen.kind !== "open") throw new Error(describeOutcome(bobOpen));
      const bobSocket = bobOpen.socket;
      expect(await aliceSocket.waitFor((f) => f.type === "connected")).toMatchObject({ user_id: alice });
      expect(await bobSocket.waitFor((f) => f.type === "connected")).toMatchObject({ user_id: bob });

      const created = await gw.api(aliceAccess, "POST", "/api/v1/chats", { listing_id: 42, seller_id: bob });
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ listing_id: 42, buyer_id: alice, seller_id: bob });
      const chatId: number = created.body.id;
      await aliceSocket.waitFor((f) => f.type === "chat_created" && f.chat.id === chatId);
      const bobCreated = await bobSocket.waitFor((f) => f.type === "chat_created" && f.chat.id === chatId);
      const cursor = "event_id" in bobCreated ? bobCreated.event_id : -1;

      // REST send through the gateway reaches the other user's socket.
      const restSend = await gw.api(bobAccess, "POST", `/api/v1/chats/${chatId}/messages`, {
        content: "hello over rest",
        client_msg_id: randomUUID(),
      });
      expect(restSend.status).toBe(201);
      expect(restSend.body).toMatchObject({ chat_id: chatId, sender_id: bob, content: "hello over rest" });
      const viaRest = await aliceSocket.waitFor(isMessage("hello over rest"));
      expect(viaRest.message).toEqual(restSend.body);

      // WS send through the gateway is acked and reaches the other user.
      const ref = randomUUID();
      aliceSocket.send({ type: "send_message", chat_id: chatId, content: "hello over ws", client_msg_id: ref });
      const ack = await aliceSocket.waitFor((f) => f.type === "ack");
      expect(ack).toMatchObject({ ref, message: { chat_id: chatId, sender_id: alice, content: "hello over ws" } });
      const viaWs = await bobSocket.waitFor(isMessage("hello over ws"));
      expect(viaWs.message).toEqual(ack.type === "ack" ? ack.message : undefined);
      await bobSocket.waitFor(isMessage("hello over rest"));

      const liveAfterCursor = bobSocket.eventIds().filter((id) => id > cursor);
      expect(liveAfterCursor).toHaveLength(2);
      await bobSocket.close();

      // Reconnect with ?after=<cursor>: exactly the events after the cursor are replayed, in order,
      // the same ones the polling endpoint returns through the gateway.
      const resumed = await gw.connectAs(bob, { after: cursor });
      await resumed.waitFor(isMessage("hello over ws"));
      const polled = await gw.api(bobAccess, "GET", `/api/v1/events?after=${cursor}`);
      expect(polled.status).toBe(200);
      expect(polled.body.events.map((e: { event_id: number }) => e.event_id)).toEqual(liveAfterCursor);
      expect(resumed.eventIds()).toEqual(liveAfterCursor);
      expect(resumed.frames.filter((f) => "event_id" in f)).toEqual(polled.body.events);

      // And it is live after the replay.
      const later = await gw.api(aliceAccess, "POST", `/api/v1/chats/${chatId}/messages`, { content: "after resume" });
      expect(later.status).toBe(201);
      const live = await resumed.waitFor(isMessage("after resume"));
      expect(live.event_id).toBeGreaterThan(liveAfterCursor[1] ?? Number.POSITIVE_INFINITY);
      expect(resumed.eventIds()).toEqual([...liveAfterCursor, live.event_id]);

      await Promise.all([aliceSocket.close(), resumed.close()]);
    });

    it("blocks and reports through the gateway (CONTRACT §10)", async () => {
      const [buyer, seller] = [111, 112];
      const buyerAccess = await gw.devToken(buyer);
      const sellerAccess = await gw.devToken(seller);
      const created = await gw.api(buyerAccess, "POST", "/api/v1/chats", { listing_id: 43, seller_id: seller });
      const chatId: number = created.body.id;
      const sent = await gw.api(sellerAccess, "POST", `/api/v1/chats/${chatId}/messages`, { content: "pay outside" });
      expect(sent.status).toBe(201);

      const report = await gw.api(buyerAccess, "POST", "/api/v1/reports", { reason: "scam", message_id: sent.body.id });
      expect([report.status, report.body]).toEqual([201, { id: expect.any(Number) }]);
      const blocked = await gw.api(buyerAccess, "POST", `/api/v1/users/${seller}/block`);
      expect(blocked.status).toBe(204);
      expect((await gw.api(buyerAccess, "GET", "/api/v1/blocks")).body).toEqual({
        blocks: [{ user_id: seller, created_at: expect.any(String) }],
      });
      const refused = await gw.api(sellerAccess, "POST", `/api/v1/chats/${chatId}/messages`, { content: "hello?" });
      expect([refused.status, refused.body.error.code]).toEqual([403, "blocked"]);
      expect((await gw.api(buyerAccess, "DELETE", `/api/v1/users/${seller}/block`)).status).toBe(204);
      const again = await gw.api(sellerAccess, "POST", `/api/v1/chats/${chatId}/messages`, { content: "hello!" });
      expect(again.status).toBe(201);
    });
  });

  describe("refusals before the upgrade", () => {
    let statsBefore: Record<string, any>;
    beforeAll(async () => {
      statsBefore = await chat.stats();
    });

    it("missing token: 401", async () => {
      await expectRefused(await tryUpgrade(gw.wsUrl), 401, "unauthorized");
      await expectRefused(await tryUpgrade(`${gw.wsUrl}?token=`), 401, "unauthorized");
    });

    it("forged ws-token (another secret): 401", async () => {
      const forged = gw.forgeWsToken(201, { secret: randomSecret() });
      const refused = await expectRefused(await tryUpgrade(`${gw.wsUrl}?token=${forged}`), 401, "unauthorized");
      expect(refused.body.error.message).toMatch(/not valid/);
    });

    it("a hand-signed ws-token with the gateway's secret and claims is accepted (control for the cases below)", async () => {
      const outcome = await tryUpgrade(`${gw.wsUrl}?token=${gw.forgeWsToken(202)}`);
      if (outcome.kind !== "open") throw new Error(describeOutcome(outcome));
      expect(await outcome.socket.waitFor((f) => f.type === "connected")).toMatchObject({ user_id: 202 });
      await outcome.socket.close();
    });

    it("expired ws-token: 401", async () => {
      const now = Math.floor(Date.now() / 1000);
      const expired = gw.forgeWsToken(203, { payload: { iat: now - 120, exp: now - 60 } });
      const refused = await expectRefused(await tryUpgrade(`${gw.wsUrl}?token=${expired}`), 401, "unauthorized");
      expect(refused.body.error.message).toMatch(/expired/);
    });

    it('alg "none": 401 as a ws-token and as an access token', async () => {
      const now = Math.floor(Date.now() / 1000);
      const payload = {
        sub: "204",
        token_use: "ws",
        aud: "listings-chat:ws",
        iss: "listings-chat:gateway",
        jti: randomUUID(),
        iat: now,
        exp: now + 60,
      };
      const none = `${b64url({ alg: "none", typ: "JWT" })}.${b64url(payload)}.`;
      await expectRefused(await tryUpgrade(`${gw.wsUrl}?token=${none}`), 401, "unauthorized");
      const noneAccess = `${b64url({ alg: "none", typ: "JWT" })}.${b64url({ sub: "204", exp: now + 600 })}.`;
      for (const path of ["/api/v2/ws-token", "/api/v1/chats"]) {
        const res = await gw.api(noneAccess, "POST", path, { listing_id: 1, seller_id: 2 });
        expect(res.status).toBe(401);
        expect(res.body).toEqual({ error: { code: "unauthorized", message: expect.any(String) } });
      }
    });

    it("an access token is not a ws-token: 401", async () => {
      const access = await gw.devToken(205);
      await expectRefused(await tryUpgrade(`${gw.wsUrl}?token=${access}`), 401, "unauthorized");
      // Nor is one carrying the ws claims, when it is signed with the access-token key.
      const lookalike = gw.accessToken(
        205,
        { token_use: "ws", jti: randomUUID() },
        {
          audience: "listings-chat:ws",
          issuer: "listings-chat:gateway",
        },
      );
      await expectRefused(await tryUpgrade(`${gw.wsUrl}?token=${lookalike}`), 401, "unauthorized");
    });

    it("a ws-token is not an access token: 401 on /api/v2/ws-token and on /api/v1/chats", async () => {
      const wsToken = await gw.wsToken(await gw.devToken(206));
      for (const [method, path] of [
        ["POST", "/api/v2/ws-token"],
        ["GET", "/api/v2/ws-token"],
        ["GET", "/api/v1/chats"],
      ] as const) {
        const res = await gw.api(wsToken, method, path);
        expect(res.status, `${method} ${path}`).toBe(401);
        expect(res.body).toEqual({ error: { code: "unauthorized", message: expect.any(String) } });
      }
      // As a cookie too.
      const cookie = await gw.api(undefined, "GET", "/api/v1/chats", undefined, { cookie: `access_token=${wsToken}` });
      expect(cookie.status).toBe(401);
      // The token was never redeemed by those attempts: it still opens a socket once.
      const outcome = await tryUpgrade(`${gw.wsUrl}?token=${wsToken}`);
      expect(outcome.kind).toBe("open");
      if (outcome.kind === "open") await outcome.socket.close();
    });

    it("wrong audience, wrong issuer, no token_use, no jti, bad sub: 401", async () => {
      const cases = [
        gw.forgeWsToken(207, { payload: { aud: "listings-chat:other" } }),
        gw.forgeWsToken(207, { payload: { iss: "someone-else" } }),
        gw.forgeWsToken(207, { payload: { token_use: undefined } }),
        gw.forgeWsToken(207, { payload: { jti: undefined } }),
        gw.forgeWsToken(207, { payload: { sub: "0" } }),
        gw.forgeWsToken(207, { payload: { sub: "abc" } }),
      ];
      for (const token of cases)
        await expectRefused(await tryUpgrade(`${gw.wsUrl}?token=${token}`), 401, "unauthorized");
    });

    it("a ws-token is single-use: the second upgrade with it is 401", async () => {
      const token = await gw.wsToken(await gw.devToken(208));
      const first = await tryUpgrade(`${gw.wsUrl}?token=${token}`);
      if (first.kind !== "open") throw new Error(describeOutcome(first));
      await first.socket.waitFor((f) => f.type === "connected");
      const again = await expectRefused(await tryUpgrade(`${gw.wsUrl}?token=${token}`), 401, "unauthorized");
      expect(again.body.error.message).toMatch(/already used/);
      // Also once the first socket is gone.
      await first.socket.close();
      await expectRefused(await tryUpgrade(`${gw.wsUrl}?token=${token}`), 401, "unauthorized");
    });

    it("a bad cursor is a 400, and other paths are 404, before any upgrade", async () => {
      const token = await gw.wsToken(await gw.devToken(209));
      await expectRefused(await tryUpgrade(`${gw.wsUrl}?token=${token}&after=-1`), 400, "validation_failed");
      await expectRefused(await tryUpgrade(`ws://127.0.0.1:${gw.gateway.port}/ws/other?token=${token}`), 404);
    });

    it("none of the refused upgrades reached the chat instance", async () => {
      const stats = await chat.stats();
      // Exactly the three accepted upgrades of this block (control, single-use first, not-redeemed).
      expect(stats.connections_total - statsBefore.connections_total).toBe(3);
    });

    it("per-user cap: the third concurrent socket gets 429; after one closes a new one is accepted", async () => {
      const capped = await startE2EGateway({
        chatUpstreams: [chat.baseUrl],
        internalToken,
        config: { maxSocketsPerUser: 2 },
      });
      try {
        const user = 210;
        const first = await capped.connectAs(user);
        const second = await capped.connectAs(user);
        expect(capped.gateway.openPipes()).toBe(2);
        const third = await tryUpgrade(`${capped.wsUrl}?token=${await capped.wsToken(await capped.devToken(user))}`);
        await expectRefused(third, 429, "rate_limited");
        // Another user is not affected.
        const other = await capped.connectAs(user + 1);
        // The first two still work.
        first.send({ type: "ping" });
        await first.waitFor((f) => f.type === "pong");
        await first.close();
        const fourth = await capped.connectAs(user);
        expect(capped.gateway.openPipes()).toBe(3);
        await Promise.all([second.close(), fourth.close(), other.close()]);
        expect(await pollUntil(() => capped.gateway.openPipes() === 0, 5_000)).toBe(true);
      } finally {
        await capped.stop();
      }
    });
  });

  describe("identity comes from the token only", () => {
    it("spoofed X-User-Id / X-Internal-Token / X-Forwarded-User are ignored on the upgrade and on REST", async () => {
      const me = 301;
      const victim = 302;
      const spoof = {
        "x-user-id": String(victim),
        "x-internal-token": internalToken,
        "x-forwarded-user": String(victim),
      };
      const victimAccess = await gw.devToken(victim);
      const victimChat = await gw.api(victimAccess, "POST", "/api/v1/chats", { listing_id: 3020, seller_id: 303 });
      expect(victimChat.status).toBe(201);

      const socket = await gw.connectAs(me, { headers: spoof });
      const connected = await socket.waitFor((f) => f.type === "connected");
      expect(connected).toMatchObject({ user_id: me });

      const myAccess = await gw.devToken(me);
      const created = await gw.api(myAccess, "POST", "/api/v1/chats", { listing_id: 3010, seller_id: 304 }, spoof);
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ buyer_id: me, seller_id: 304 });
      await socket.waitFor((f) => f.type === "chat_created" && f.chat.id === created.body.id);

      const mine = await gw.api(myAccess, "GET", "/api/v1/chats", undefined, spoof);
      expect(mine.status).toBe(200);
      expect(mine.body.chats.map((c: { id: number }) => c.id)).toEqual([created.body.id]);
      const foreign = await gw.api(myAccess, "GET", `/api/v1/chats/${victimChat.body.id}/messages`, undefined, spoof);
      expect(foreign.status).toBe(404);

      // The right internal token and a user id without an access token get nowhere.
      const bare = await gw.api(undefined, "GET", "/api/v1/chats", undefined, spoof);
      expect(bare.status).toBe(401);
      expect(bare.body).toEqual({ error: { code: "unauthorized", message: expect.any(String) } });
      await expectRefused(await tryUpgrade(gw.wsUrl, { headers: spoof }), 401, "unauthorized");
      await socket.close();
    });
  });

  describe("the access_token cookie cannot be used across sites", () => {
    it("refuses a cookie-authenticated change with a form body or from another site, accepts same-site JSON", async () => {
      const access = await gw.devToken(1301);
      const post = (headers: Record<string, string>, body: string) =>
        fetch(`${gw.baseUrl}/api/v1/chats`, {
          method: "POST",
          headers: { cookie: `access_token=${access}`, ...headers },
          body,
        });
      const json = JSON.stringify({ listing_id: 77, seller_id: 1302 });
      const form = await post({ "content-type": "text/plain" }, json);
      expect(form.status).toBe(403);
      expect(((await form.json()) as { error: { code: string } }).error.code).toBe("forbidden");
      const crossSite = await post({ "content-type": "application/json", "sec-fetch-site": "cross-site" }, json);
      expect(crossSite.status).toBe(403);
      const sameSite = await post({ "content-type": "application/json", "sec-fetch-site": "same-origin" }, json);
      expect(sameSite.status).toBe(201);
      // The Bearer header is not sent by browsers on their own: no such check applies to it.
      const bearer = await fetch(`${gw.baseUrl}/api/v1/chats`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${access}`,
          "content-type": "application/json",
          "sec-fetch-site": "cross-site",
        },
        body: JSON.stringify({ listing_id: 78, seller_id: 1302 }),
      });
      expect(bearer.status).toBe(201);
    });

    it("applies whenever the token came from the cookie, whatever Authorization header rides along", async () => {
      const access = await gw.devToken(1303);
      const json = JSON.stringify({ listing_id: 79, seller_id: 1304 });
      const attempts: Array<[string, Record<string, string>, string]> = [];
      // Headers a browser adds on its own (Basic or Digest behind HTTP auth) or an empty one: the token is
      // still the cookie's, so the cross-site rules apply.
      for (const authorization of ["Basic dXNlcjpwYXNz", 'Digest username="u", realm="r"', "", "Bearer"]) {
        attempts.push([
          `${authorization} + cross-site`,
          { authorization, "sec-fetch-site": "cross-site", "content-type": "application/json" },
          json,
        ]);
        attempts.push([`${authorization} + text/plain`, { authorization, "content-type": "text/plain" }, json]);
        attempts.push([
          `${authorization} + form`,
          { authorization, "content-type": "application/x-www-form-urlencoded" },
          "listing_id=79&seller_id=1304",
        ]);
        attempts.push([
          `${authorization} + multipart`,
          { authorization, "content-type": "multipart/form-data; boundary=x" },
          "--x--",
        ]);
        attempts.push([
          `${authorization} + json look-alike`,
          { authorization, "content-type": "application/jsonx" },
          json,
        ]);
        attempts.push([
          `${authorization} + cross-site without a content type`,
          { authorization, "sec-fetch-site": "cross-site" },
          json,
        ]);
      }
      for (const [what, headers, body] of attempts) {
        const res = await fetch(`${gw.baseUrl}/api/v1/chats`, {
          method: "POST",
          headers: { cookie: `access_token=${access}`, ...headers },
          body,
        });
        expect(res.status, what).toBe(403);
      }
      const allowed = await fetch(`${gw.baseUrl}/api/v1/chats`, {
        method: "POST",
        headers: {
          cookie: `access_token=${access}`,
          authorization: "Basic dXNlcjpwYXNz",
          "content-type": "application/json; charset=utf-8",
          "sec-fetch-site": "same-origin",
        },
        body: json,
      });
      expect(allowed.status).toBe(201);
    });
  });

  describe("/internal is never reachable through the gateway", () => {
    it("404 however it is spelled, on HTTP and on upgrades; the chat port serves it with the internal token", async () => {
      const withToken = { "x-internal-token": internalToken, authorization: `Bearer ${internalToken}` };
      for (const path of [
        "/internal/chat/ws/stats",
        "/internal/anything",
        "/internal",
        "/%69nternal/chat/ws/stats",
        "/%69%6E%74%65%72%6E%61%6C/chat/ws/stats",
        "//internal/chat/ws/stats",
        "/INTERNAL/chat/ws/stats",
        "/api/v1/chats/../../internal/chat/ws/stats",
        "/api/v1/chats/%2e%2e/%2e%2e/internal/chat/ws/stats",
      ]) {
        for (const method of ["GET", "POST"]) {
          const res = await http(gw.baseUrl, method, path, { headers: withToken });
          expect(res.status, `${method} ${path}`).toBe(404);
          expect(res.body, `${method} ${path}`).toEqual({ error: { code: "not_found", message: expect.any(String) } });
        }
      }
      const token = await gw.wsToken(await gw.devToken(401));
      await expectRefused(
        await tryUpgrade(`ws://127.0.0.1:${gw.gateway.port}/internal/chat/ws/stats?token=${token}`, {
          headers: withToken,
        }),
        404,
        "not_found",
      );

      const direct = await http(chat.baseUrl, "GET", "/internal/chat/ws/stats", {
        headers: { "x-internal-token": internalToken },
      });
      expect(direct.status).toBe(200);
      expect(direct.body).toMatchObject({ connections: expect.any(Number), instance_id: expect.any(String) });
      const encoded = await http(chat.baseUrl, "GET", "/%69nternal/chat/ws/stats", {
        headers: { "x-internal-token": internalToken },
      });
      // The chat port decodes this spelling to the stats: the gateway's 404 above is what protects it.
      expect(encoded.status).toBe(200);
      const noToken = await http(chat.baseUrl, "GET", "/internal/chat/ws/stats");
      expect(noToken.status).toBe(401);

      // The platform's voice (CONTRACT §8): a listing is registered on the chat port, never through the gateway.
      const listing = {
        seller_id: 7,
        title: "Lamp",
        price_minor: 1_500,
        currency: "EUR",
        image_url: null,
        url: "https://marketplace.example/listings/4242",
        status: "active",
      };
      for (const path of ["/internal/chat/listings/4242", "/%69nternal/chat/listings/4242"]) {
        const viaGateway = await http(gw.baseUrl, "PUT", path, {
          headers: { ...withToken, "content-type": "application/json" },
          body: listing,
        });
        expect(viaGateway.status, path).toBe(404);
        expect(viaGateway.body, path).toEqual({ error: { code: "not_found", message: expect.any(String) } });
      }
      const registered = await http(chat.baseUrl, "PUT", "/internal/chat/listings/4242", {
        headers: { "x-internal-token": internalToken, "content-type": "application/json" },
        body: listing,
      });
      expect(registered.status).toBe(200);
      expect(registered.body).toMatchObject({ id: 4242, ...listing });
    });
  });

  describe("frames and close codes pass through unchanged", () => {
    it("binary frame → error bad_request; fragmented ping → pong; the socket stays open", async () => {
      const socket = await gw.connectAs(501);
      socket.ws.send(Buffer.from([1, 2, 3, 0xff]), { binary: true });
      const error = await socket.waitFor((f) => f.type === "error");
      expect(error).toMatchObject({ code: "bad_request" });

      const from = socket.frames.length;
      socket.ws.send('{"ty', { fin: false });
      await sleep(30);
      socket.ws.send('pe":', { fin: false });
      await sleep(30);
      socket.ws.send('"ping"}', { fin: true });
      await socket.waitFor((f) => f.type === "pong", 5_000, from);
      expect(socket.frames.slice(from).map((f) => f.type)).toEqual(["pong"]);
      expect(socket.oddFrames).toEqual([]);
      expect(socket.closeInfo).toBeUndefined();
      await socket.close();
    });

    it("a frame over 64 KiB: the chat service closes with 1009 and the client sees 1009", async () => {
      const socket = await gw.connectAs(502);
      socket.send({ type: "ping", pad: "x".repeat(64 * 1024) });
      const closed = await socket.waitClosed(5_000);
      expect(closed.code).toBe(1009);
    });

    it("a frame of exactly 64 KiB still passes", async () => {
      const socket = await gw.connectAs(503);
      const frame = JSON.stringify({ type: "ping", pad: "" });
      socket.send(frame.replace('""', `"${"x".repeat(64 * 1024 - frame.length)}"`));
      await socket.waitFor((f) => f.type === "pong");
      expect(socket.closeInfo).toBeUndefined();
      await socket.close();
    });

    it("the client's close code reaches the chat service and its echo comes back", async () => {
      const socket = await gw.connectAs(504);
      socket.ws.close(4321, "bye");
      const closed = await socket.waitClosed();
      expect(closed).toEqual({ code: 4321, reason: "bye" });
    });

    it("a chat-instance shutdown reaches the client as 1001", async () => {
      const token = randomSecret();
      const own = await startE2EChat({ database: { inMemory: true }, internalToken: token });
      const ownGw = await startE2EGateway({ chatUpstreams: [own.baseUrl], internalToken: token });
      try {
        const sockets = [await ownGw.connectAs(505), await ownGw.connectAs(506)];
        await own.stop();
        for (const s of sockets) expect((await s.waitClosed()).code).toBe(1001);
        expect(await pollUntil(() => ownGw.gateway.openPipes() === 0, 5_000)).toBe(true);
      } finally {
        await ownGw.stop();
        await own.stop();
      }
    });
  });

  describe("no leaks under abrupt disconnects", () => {
    it("~2000 sockets destroyed at every stage leave no pipe, connection or listener behind", async () => {
      const token = randomSecret();
      const own = await startE2EChat({ database: { inMemory: true }, internalToken: token });
      const leakGw = await startE2EGateway({
        chatUpstreams: [own.baseUrl],
        internalToken: token,
        config: { maxSocketsPerUser: 1000 },
      });
      const warnings: Error[] = [];
      const onWarning = (warning: Error) => warnings.push(warning);
      process.on("warning", onWarning);
      const server = leakGw.gateway.server;
      const listenerCounts = () => ({
        upgrade: server.listenerCount("upgrade"),
        connection: server.listenerCount("connection"),
        request: server.listenerCount("request"),
      });
      try {
        const start = {
          pipes: leakGw.gateway.openPipes(),
          connections: await getConnections(server),
          listeners: listenerCounts(),
        };
        expect(start.pipes).toBe(0);

        const users = Array.from({ length: 20 }, (_, i) => 7000 + i);
        const access = users.map((u) => leakGw.accessToken(u));
        const tokens = new Pool(leakGw.baseUrl, { connections: 16 });
        const issue = async (i: number) => {
          const res = await tokens.request({
            method: "POST",
            path: "/api/v2/ws-token",
            headers: { authorization: `Bearer ${access[i % access.length]}` },
          });
          const body = (await res.body.json()) as { token: string };
          if (res.statusCode !== 200) throw new Error(`ws-token answered ${res.statusCode}`);
          return body.token;
        };

        const outcomes = { opened: 0, refused: 0, aborted: 0 };
        /** One socket, ended abruptly at a stage chosen by `mode`; resolves once the client side is gone. */
        const abrupt = (wsToken: string, mode: number) =>
          new Promise<void>((resolve) => {
            const url = `${leakGw.wsUrl}?token=${wsToken}`;
            if (mode === 3) {
              // Raw TCP: the upgrade request goes out, the socket dies while the gateway works on it.
              void rawConnection(leakGw.gateway.port)
                .then(async (raw) => {
                  raw.socket.write(`${upgradeHead(`/ws/chat?token=${wsToken}`)}\r\n`);
                  await sleep(Math.floor(Math.random() * 8));
                  raw.socket.destroy();
                  outcomes.aborted += 1;
                })
                .catch(() => {
                  outcomes.aborted += 1;
                })
                .finally(resolve);
              return;
            }
            const ws = new WebSocket(url, { perMessageDeflate: false });
            ws.on("error", () => {});
            ws.once("close", () => resolve());
            ws.once("unexpected-response", (_req, res) => {
              outcomes.refused += 1;
              res.resume();
              ws.terminate();
            });
            ws.once("open", () => {
              outcomes.opened += 1;
              if (mode === 0) (ws as unknown as { _socket: { destroy(): void } })._socket.destroy();
              else ws.terminate();
            });
            if (mode === 2) {
              // Mid-handshake: the request is out, the 101 has not come back yet (or just did).
              setTimeout(
                () => {
                  if (ws.readyState === WebSocket.CONNECTING) {
                    outcomes.aborted += 1;
                    ws.terminate();
                  }
                },
                Math.floor(Math.random() * 6),
              );
            }
          });

        const batches = 10;
        const perBatch = 200;
        for (let b = 0; b < batches; b++) {
          const wsTokens = await Promise.all(Array.from({ length: perBatch }, (_, i) => issue(b * perBatch + i)));
          await Promise.all(wsTokens.map((t, i) => abrupt(t, i % 4)));
        }
        await tokens.close();

        const total = batches * perBatch;
        expect(outcomes.refused).toBe(0);
        // Modes 0 and 1 always open; mode 2 sometimes opens before it is aborted; mode 3 never opens.
        expect(outcomes.opened).toBeGreaterThanOrEqual(total / 2);
        expect(outcomes.opened + outcomes.aborted).toBe(total);

        const settled = await pollUntil(
          async () =>
            leakGw.gateway.openPipes() === start.pipes && (await getConnections(server)) === start.connections,
          10_000,
          50,
        );
        expect({ pipes: leakGw.gateway.openPipes(), connections: await getConnections(server), settled }).toEqual({
          pipes: start.pipes,
          connections: start.connections,
          settled: true,
        });
        expect(listenerCounts()).toEqual(start.listeners);
        expect(await pollUntil(async () => (await own.stats()).connections === 0, 10_000, 100)).toBe(true);
        const stats = await own.stats();
        expect(stats).toMatchObject({ connections: 0, users_online: 0 });
        // Every opened pipe reached the chat instance, and every one of them left it.
        expect(stats.connections_total).toBeGreaterThanOrEqual(outcomes.opened);
        expect(stats.disconnections_total).toBe(stats.connections_total);
        expect(warnings.filter((w) => w.name === "MaxListenersExceededWarning")).toEqual([]);

        // The gateway still works afterwards.
        const after = await leakGw.connectAs(users[0] ?? 7000);
        after.send({ type: "ping" });
        await after.waitFor((f) => f.type === "pong");
        await after.close();
      } finally {
        process.off("warning", onWarning);
        await leakGw.stop();
        await own.stop();
      }
    }, 50_000);
  });

  describe("gateway shutdown (SIGTERM drain)", () => {
    it("refuses new upgrades with 503, keeps the open pipe until the chat side closes it with 1001", async () => {
      const token = randomSecret();
      const own = await startE2EChat({ database: { inMemory: true }, internalToken: token });
      const drainGw = await startE2EGateway({
        chatUpstreams: [own.baseUrl],
        internalToken: token,
        config: { shutdownDrainMs: 5_000 },
      });
      try {
        const socket = await drainGw.connectAs(801);
        const pendingToken = await drainGw.wsToken(await drainGw.devToken(802));
        // A client whose upgrade request is in flight when the stop begins.
        const inFlight = await rawConnection(drainGw.gateway.port);
        await inFlight.write(upgradeHead(`/ws/chat?token=${pendingToken}`));
        await sleep(50);

        const started = Date.now();
        let stoppedAt: number | undefined;
        const stopping = drainGw.stop().then(() => {
          stoppedAt = Date.now();
        });
        await sleep(50);

        await inFlight.write("\r\n");
        const refusal = await inFlight.answer();
        expect(refusal.status).toBe(503);
        expect(refusal.headers["content-type"]).toMatch(/^application\/json/);
        expect(refusal.body).toEqual({ error: { code: "shutting_down", message: expect.any(String) } });

        // A brand-new connection is still answered, with a 503 before any upgrade, and /ready turns 503.
        await expectRefused(
          await tryUpgrade(`${drainGw.wsUrl}?token=${drainGw.forgeWsToken(803)}`),
          503,
          "shutting_down",
        );
        const ready = await fetch(`http://127.0.0.1:${drainGw.gateway.port}/ready`);
        expect(ready.status).toBe(503);

        // The open pipe keeps working during the drain.
        const from = socket.frames.length;
        socket.send({ type: "ping" });
        await socket.waitFor((f) => f.type === "pong", 2_000, from);
        expect(stoppedAt).toBeUndefined();
        expect(drainGw.gateway.openPipes()).toBe(1);

        // The chat side closes it: the client sees the 1001, and the gateway's stop ends long before its deadline.
        await own.stop();
        expect((await socket.waitClosed()).code).toBe(1001);
        await stopping;
        expect((stoppedAt ?? Number.POSITIVE_INFINITY) - started).toBeLessThan(4_000);
      } finally {
        await drainGw.stop();
        await own.stop();
      }
    });

    it("closes what is still open when the drain deadline passes", async () => {
      const token = randomSecret();
      const own = await startE2EChat({ database: { inMemory: true }, internalToken: token });
      const drainGw = await startE2EGateway({
        chatUpstreams: [own.baseUrl],
        internalToken: token,
        config: { shutdownDrainMs: 400 },
      });
      try {
        const socket = await drainGw.connectAs(811);
        const started = Date.now();
        const stopping = drainGw.stop();
        await sleep(100);
        const from = socket.frames.length;
        socket.send({ type: "ping" });
        await socket.waitFor((f) => f.type === "pong", 2_000, from);
        expect(socket.closeInfo).toBeUndefined();

        const closed = await socket.waitClosed(3_000);
        const elapsed = Date.now() - started;
        // At the deadline the gateway asked the chat instance (still up) to close its sockets: 1001, not 1006.
        expect(closed.code).toBe(1001);
        expect(elapsed).toBeGreaterThanOrEqual(150);
        await stopping;
        expect(Date.now() - started).toBeLessThan(3_000);
        expect(drainGw.gateway.openPipes()).toBe(0);
        expect(await pollUntil(async () => (await own.stats()).connections === 0, 5_000)).toBe(true);
      } finally {
        await drainGw.stop();
        await own.stop();
      }
    });
  });
});

/** Databases whose data survives a restart of the chat instance: file-backed PGlite; PostgreSQL when set. */
function persistentTargets(): Array<{
  name: string;
  create(): Promise<{ options: DatabaseOptions; drop(): Promise<void> }>;
}> {
  const pgliteFiles = {
    name: "pglite (files)",
    async create() {
      const dir = await mkdtemp(join(tmpdir(), "gateway-e2e-"));
      return {
        options: { dataDir: join(dir, "data") } as DatabaseOptions,
        drop: () => rm(dir, { recursive: true, force: true }),
      };
    },
  };
  const postgres = process.env.DATABASE_URL ? databaseTargets().filter((t) => t.name === "postgres") : [];
  return [pgliteFiles, ...postgres];
}

describe.each(persistentTargets())("chat instance killed and restarted behind the gateway ($name)", (target) => {
  it("503 on upgrades and 502 on REST while it is down; both work again once it is back on the same port", async () => {
    const internalToken = randomSecret();
    const db = await target.create();
    const port = await freePort();
    let chat: E2EChat | undefined = await startE2EChat({ database: db.options, internalToken, port });
    const gw = await startE2EGateway({ chatUpstreams: [`http://127.0.0.1:${port}`], internalToken });
    try {
      const [alice, bob] = [901, 902];
      const aliceAccess = await gw.devToken(alice);
      const created = await gw.api(aliceAccess, "POST", "/api/v1/chats", { listing_id: 9, seller_id: bob });
      expect(created.status).toBe(201);
      const chatId: number = created.body.id;
      const before = await gw.api(aliceAccess, "POST", `/api/v1/chats/${chatId}/messages`, {
        content: "before the restart",
      });
      expect(before.status).toBe(201);
      const socket: E2ESocket = await gw.connectAs(bob);

      await chat.stop();
      chat = undefined;
      expect((await socket.waitClosed()).code).toBe(1001);

      const refused = await expectRefused(
        await tryUpgrade(`${gw.wsUrl}?token=${await gw.wsToken(await gw.devToken(bob))}`),
        503,
        "upstream_unavailable",
      );
      expect(refused.headers["retry-after"]).toBeDefined();
      const rest = await gw.api(aliceAccess, "GET", "/api/v1/chats");
      expect(rest.status).toBe(502);
      expect(rest.body).toEqual({ error: { code: expect.stringMatching(/^upstream_/), message: expect.any(String) } });
      const send = await gw.api(aliceAccess, "POST", `/api/v1/chats/${chatId}/messages`, { content: "while down" });
      expect(send.status).toBe(502);
      const ready = await http(gw.baseUrl, "GET", "/ready");
      expect(ready.status).toBe(503);
      expect(gw.gateway.openPipes()).toBe(0);

      chat = await startE2EChat({ database: db.options, internalToken, port });
      expect(chat.port).toBe(port);

      const back = await gw.connectAs(bob);
      const history = await gw.api(aliceAccess, "GET", `/api/v1/chats/${chatId}/messages`);
      expect(history.status).toBe(200);
      expect(history.body.messages.map((m: { content: string }) => m.content)).toEqual(["before the restart"]);
      const after = await gw.api(aliceAccess, "POST", `/api/v1/chats/${chatId}/messages`, { content: "after" });
      expect(after.status).toBe(201);
      const live = await back.waitFor(isMessage("after"));
      expect(live.message).toEqual(after.body);
      expect((await http(gw.baseUrl, "GET", "/ready")).status).toBe(200);
      await back.close();
    } finally {
      await gw.stop();
      await chat?.stop();
      await db.drop();
    }
  });
});

describe("several chat instances behind one gateway", () => {
  it("takes the next instance when the first one is down, for the very first upgrade and request", async () => {
    const internalToken = randomSecret();
    const chat = await startE2EChat({ database: { inMemory: true }, internalToken });
    const dead = `http://127.0.0.1:${await freePort()}`;
    // The dead instance first: round-robin starts there for the first upgrade and the first request.
    const gw = await startE2EGateway({ chatUpstreams: [dead, chat.baseUrl], internalToken });
    try {
      const socket = await gw.connectAs(1201);
      const connected = await socket.waitFor((f) => f.type === "connected");
      expect(connected).toMatchObject({ type: "connected", user_id: 1201 });
      socket.send({ type: "ping" });
      await socket.waitFor((f) => f.type === "pong");
      await socket.close();

      const gw2 = await startE2EGateway({ chatUpstreams: [dead, chat.baseUrl], internalToken });
      try {
        const access = await gw2.devToken(1202);
        const res = await gw2.api(access, "GET", "/api/v1/chats");
        expect(res.status).toBe(200);
      } finally {
        await gw2.stop();
      }
    } finally {
      await gw.stop();
      await chat.stop();
    }
  });
});
