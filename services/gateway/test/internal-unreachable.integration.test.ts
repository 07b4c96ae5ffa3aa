import { connect, createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type E2EChat,
  type E2EGateway,
  http,
  inWaves,
  randomSecret,
  startE2EChat,
  startE2EGateway,
} from "./support/e2e.ts";
import { hasNginx, startNginx, type TestNginx } from "./support/nginx.ts";

// ---------------------------------------------------------------------------------------------------
// What reaches the chat port

interface RecordingRelay {
  url: string;
  /**
   * Every request line ("METHOD target") that passed through, in order. Found anywhere in the stream, not
   * only after a CRLF: on a kept-alive connection a request follows the previous body's last byte.
   */
  requestLines(): string[];
  close(): Promise<void>;
}

/** A TCP relay on 127.0.0.1 to `targetPort` that keeps the bytes clients send, to read request lines off. */
async function startRecordingRelay(targetPort: number): Promise<RecordingRelay> {
  const streams: string[] = [];
  const open = new Set<Socket>();
  const server: Server = createServer((client) => {
    const index = streams.push("") - 1;
    const upstream = connect(targetPort, "127.0.0.1");
    for (const socket of [client, upstream]) {
      open.add(socket);
      socket.on("error", () => {});
      socket.once("close", () => open.delete(socket));
    }
    client.on("data", (chunk: Buffer) => {
      streams[index] += chunk.toString("latin1");
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => client.write(chunk));
    client.once("close", () => upstream.destroy());
    upstream.once("close", () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("the relay has no port");
  return {
    url: `http://127.0.0.1:${address.port}`,
    requestLines: () =>
      streams.flatMap((stream) =>
        [...stream.matchAll(/(?<![A-Z])([A-Z]+) (\S+) HTTP\/1\.[01]\r\n/g)].map((m) => `${m[1]} ${m[2]}`),
      ),
    async close() {
      for (const socket of open) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The chat instance's request counter, `${method} ${route pattern} ${status}` → count, from its /metrics. */
async function chatRequestCounts(chat: E2EChat): Promise<Map<string, number>> {
  const res = await http(chat.baseUrl, "GET", "/metrics", { headers: { "x-internal-token": chat.internalToken } });
  if (res.status !== 200) throw new Error(`chat /metrics answered ${res.status}`);
  const counts = new Map<string, number>();
  for (const m of res.text.matchAll(/^listings_chat_http_request_duration_seconds_count\{([^}]*)\} (\d+)$/gm)) {
    const labels = Object.fromEntries([...(m[1] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    counts.set(`${labels.method} ${labels.route} ${labels.status}`, Number(m[2]));
  }
  return counts;
}

/** What changed between two readings of the counter, leaving out the /metrics scrapes themselves. */
function countsMoved(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const moved: Record<string, number> = {};
  for (const [key, count] of after) {
    if (key.startsWith("GET /metrics ")) continue;
    const delta = count - (before.get(key) ?? 0);
    if (delta !== 0) moved[key] = delta;
  }
  return moved;
}

// ---------------------------------------------------------------------------------------------------
// Raw requests (any request target, written as is)

interface RawAnswer {
  status: number;
  head: string;
  body: any;
}

/**
 * One request on a new TCP connection, the request target written exactly as given (no client normalises
 * it), and its answer: read up to `Content-Length`, or until the server closes. Status 0: no answer in 5 s.
 */
function rawRequest(
  port: number,
  method: string,
  target: string,
  headers: Record<string, string>,
  body?: unknown,
): Promise<RawAnswer> {
  const payload = body === undefined ? "" : JSON.stringify(body);
  const lines = [
    `${method} ${target} HTTP/1.1`,
    "Host: 127.0.0.1",
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
    ...(payload ? ["Content-Type: application/json", `Content-Length: ${Buffer.byteLength(payload)}`] : []),
  ];
  if (!Object.keys(headers).some((h) => h.toLowerCase() === "connection")) lines.push("Connection: close");
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let received = Buffer.alloc(0);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const raw = received.toString("utf8");
      const split = raw.indexOf("\r\n\r\n");
      const head = split === -1 ? raw : raw.slice(0, split);
      const text = split === -1 ? "" : raw.slice(split + 4);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0), head, body: parsed });
    };
    const timer = setTimeout(finish, 5_000);
    socket.on("error", finish);
    socket.once("close", finish);
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const split = received.indexOf("\r\n\r\n");
      if (split === -1) return;
      const head = received.subarray(0, split).toString("latin1");
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (/^HTTP\/1\.1 101/.test(head) || (length && received.length - split - 4 >= Number(length[1]))) finish();
    });
    socket.write(`${lines.join("\r\n")}\r\n\r\n${payload}`);
  });
}

// ---------------------------------------------------------------------------------------------------

const internalToken = randomSecret();
const LISTING = 424_242;
const SELLER = 7101;
const BUYER = 7102;
const TITLE = "Road bike, 56 cm";

/** Every §8 and §12 route (CONTRACT §8, §12), with ids that exist and a body that would change something if it arrived. */
function platformRoutes(ids: { chat: number; message: number }): { method: string; path: string; body?: unknown }[] {
  return [
    {
      method: "PUT",
      path: `/internal/chat/listings/${LISTING}`,
      body: {
        seller_id: SELLER,
        title: "HIJACKED",
        price_minor: 1,
        currency: "EUR",
        image_url: null,
        url: "https://example.com/x",
        status: "removed",
      },
    },
    { method: "PUT", path: `/internal/chat/users/${SELLER}`, body: { display_name: "HIJACKED", avatar_url: null } },
    { method: "POST", path: "/internal/chat/chats", body: { listing_id: LISTING, buyer_id: BUYER + 1 } },
    {
      method: "POST",
      path: `/internal/chat/chats/${ids.chat}/messages`,
      body: { content: "HIJACKED", data: { x: 1 }, client_msg_id: `hijack-${ids.chat}` },
    },
    { method: "DELETE", path: `/internal/chat/messages/${ids.message}`, body: { reason: "HIJACKED" } },
    { method: "POST", path: `/internal/chat/users/${BUYER}/suspend`, body: { reason: "HIJACKED" } },
    { method: "DELETE", path: `/internal/chat/users/${BUYER}/suspend` },
    // A person's data (CONTRACT §12): an erasure would suspend the buyer, whose send below would then fail.
    { method: "GET", path: `/internal/chat/users/${BUYER}/export` },
    { method: "DELETE", path: `/internal/chat/users/${BUYER}` },
  ];
}

/** Ways to spell `/internal/chat/<rest>` that a lax normaliser (or a proxy in front of one) might let through. */
function spellings(path: string, chatPort: number): string[] {
  const rest = path.slice("/internal/".length); // chat/…
  const tail = path.slice(1); // internal/chat/…
  return [
    path,
    `/${path}`, // //internal/chat/…
    `///${tail}`,
    `/./${tail}`,
    `/api/v1/..${path}`,
    `/api/v1/chats/../..${path}`,
    `/api/v1/chats/1/messages/../../../..${path}`,
    `/api/v1/%2e%2e${path}`,
    `/api/v1/chats/%2e%2e/%2e%2e${path}`,
    `/api/v1/chats/%2E%2E/%2E%2E${path}`,
    `/api/v1/chats/..%2f..%2f${tail}`,
    `/api/v1/chats/%2e%2e%2f%2e%2e%2f${tail}`,
    `/ws/chat/../..${path}`,
    `/%2e%2e${path}`,
    `/internal%2F${rest}`,
    `/internal%2f${rest}`,
    `/%2Finternal/${rest}`,
    `/%69nternal/${rest}`,
    `/%49NTERNAL/${rest}`,
    path.toUpperCase(),
    `/Internal/${rest}`,
    `/internal/CHAT/${rest.slice("chat/".length)}`,
    `/\\${tail}`,
    `/internal\\${rest}`,
    `${path}/`,
    `${path}?via=gateway`,
    `${path}%00`,
    `${path};x=1`,
    `http://127.0.0.1:${chatPort}${path}`,
  ];
}

describe("/internal/chat/… (CONTRACT §8) is reached on the chat port only", () => {
  let chat: E2EChat;
  let relay: RecordingRelay;
  let gw: E2EGateway;
  let nginx: TestNginx | undefined;
  const ids = { chat: 0, message: 0 };
  let buyerAccess = "";

  beforeAll(async () => {
    chat = await startE2EChat({ database: { inMemory: true }, internalToken });
    relay = await startRecordingRelay(chat.port);
    gw = await startE2EGateway({ chatUpstreams: [relay.url], internalToken });

    // A listing, a chat on it and a message, so that every route names something that exists.
    const listing = await http(chat.baseUrl, "PUT", `/internal/chat/listings/${LISTING}`, {
      headers: { "x-internal-token": internalToken },
      body: {
        seller_id: SELLER,
        title: TITLE,
        price_minor: 15_000,
        currency: "EUR",
        image_url: null,
        url: "https://example.com/l/1",
        status: "active",
      },
    });
    if (listing.status !== 200) throw new Error(`PUT listing answered ${listing.status}: ${listing.text}`);
    buyerAccess = gw.accessToken(BUYER);
    const opened = await gw.api(buyerAccess, "POST", "/api/v1/chats", { listing_id: LISTING, seller_id: SELLER });
    if (opened.status !== 201) throw new Error(`POST /api/v1/chats answered ${opened.status}: ${opened.text}`);
    ids.chat = opened.body.id;
    const sent = await gw.api(buyerAccess, "POST", `/api/v1/chats/${ids.chat}/messages`, { content: "hello" });
    if (sent.status !== 201) throw new Error(`send answered ${sent.status}: ${sent.text}`);
    ids.message = sent.body.id;

    if (hasNginx) nginx = await startNginx(gw.gateway.port);
  }, 60_000);

  afterAll(async () => {
    await nginx?.stop();
    await gw?.stop();
    await relay?.close();
    await chat?.stop();
  });

  /**
   * Tries every spelling of every §8 route through `port` (the gateway's or nginx's), with no token, the
   * internal token (as X-Internal-Token and as a Bearer), and the internal token next to a user's access
   * token; then the upgrades. Returns what was answered, by status.
   */
  async function sweep(port: number) {
    const { token: wsToken } = (
      await http(gw.baseUrl, "POST", "/api/v2/ws-token", { headers: { authorization: `Bearer ${buyerAccess}` } })
    ).body as { token: string };
    const credentials: Record<string, string>[] = [
      {},
      { "X-Internal-Token": internalToken },
      { Authorization: `Bearer ${internalToken}` },
      { "X-Internal-Token": internalToken, Authorization: `Bearer ${buyerAccess}`, "X-User-Id": String(BUYER) },
      { "X-Internal-Token": internalToken, Cookie: `access_token=${buyerAccess}`, "Sec-Fetch-Site": "same-origin" },
    ];
    const jobs: (() => Promise<{ what: string; answer: RawAnswer }>)[] = [];
    for (const route of platformRoutes(ids)) {
      for (const target of spellings(route.path, chat.port)) {
        for (const headers of credentials) {
          jobs.push(async () => ({
            what: `${route.method} ${target} [${Object.keys(headers).join(",") || "no token"}]`,
            answer: await rawRequest(port, route.method, target, headers, route.body),
          }));
        }
        // The same path as a WebSocket upgrade, with a valid ws-token and the internal token.
        jobs.push(async () => ({
          what: `upgrade ${target}`,
          answer: await rawRequest(port, "GET", `${target}${target.includes("?") ? "&" : "?"}token=${wsToken}`, {
            Connection: "Upgrade",
            Upgrade: "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "X-Internal-Token": internalToken,
          }),
        }));
      }
    }
    const results = await inWaves(jobs, 16);
    const byStatus: Record<string, number> = {};
    for (const { answer } of results) byStatus[answer.status] = (byStatus[answer.status] ?? 0) + 1;
    return { results, byStatus };
  }

  /** The sweep through `port`, and what the chat instance saw of it: nothing. */
  async function expectNothingReachesTheChat(port: number) {
    const linesBefore = relay.requestLines().length;
    const countsBefore = await chatRequestCounts(chat);
    const { results, byStatus } = await sweep(port);
    expect(results.length).toBe(platformRoutes(ids).length * spellings("/internal/chat/x", chat.port).length * 6);

    // Each got a refusal: no acceptance (101, 2xx, 3xx), and an answer within 5 s (status 0: none).
    const accepted = results.filter(({ answer }) => answer.status < 400);
    expect(accepted.map(({ what, answer }) => `${what} → ${answer.status}`)).toEqual([]);
    // In the contract's JSON with 400, 401 or 404: request lines an HTTP parser refuses before any route (a
    // backslash, a NUL, dots above the root) too (the gateway's client-errors.ts; nginx's 400 error page is a
    // URI, since a named location answered those with its own 500 page).
    const notJson = results.filter(
      ({ answer }) => ![400, 401, 404].includes(answer.status) || typeof answer.body?.error?.code !== "string",
    );
    expect(notJson.map(({ what, answer }) => `${what} → ${answer.head.split("\r\n")[0]}`)).toEqual([]);

    // The chat instance saw none of it: nothing passed the relay, its request counter did not move.
    expect(relay.requestLines().slice(linesBefore)).toEqual([]);
    expect(countsMoved(countsBefore, await chatRequestCounts(chat))).toEqual({});

    // And nothing happened: the buyer is not suspended and the listing is not removed (the send is stored),
    // the listing keeps its title, the seller has no name, the message is not deleted, no chat was opened.
    const sent = await gw.api(buyerAccess, "POST", `/api/v1/chats/${ids.chat}/messages`, { content: "still here" });
    expect(sent.status).toBe(201);
    const list = await gw.api(buyerAccess, "GET", "/api/v1/chats");
    expect(list.status).toBe(200);
    expect(list.body.chats).toHaveLength(1);
    const [only] = list.body.chats;
    expect(only.id).toBe(ids.chat);
    expect(only.listing).toMatchObject({ title: TITLE, status: "active" });
    expect(only.peer).toEqual({ id: SELLER, display_name: null, avatar_url: null });
    const page = await gw.api(buyerAccess, "GET", `/api/v1/chats/${ids.chat}/messages`);
    expect(page.body.messages.find((m: { id: number }) => m.id === ids.message)).toMatchObject({ deleted_at: null });
    expect(JSON.stringify(page.body)).not.toContain("HIJACKED");
    // Those three checks went through the same relay: it does see what the gateway forwards.
    expect(relay.requestLines().slice(linesBefore)).toEqual([
      `POST /api/v1/chats/${ids.chat}/messages`,
      "GET /api/v1/chats",
      `GET /api/v1/chats/${ids.chat}/messages`,
    ]);
    return byStatus;
  }

  it("refuses every spelling of every §8 route through the gateway, and none reaches the chat instance", async () => {
    const byStatus = await expectNothingReachesTheChat(gw.gateway.port);
    // Most are the gateway's 404 (`/internal` however spelled, dots and percent-encoding under /api/v1).
    expect(byStatus["404"]).toBeGreaterThan(0);
  }, 60_000);

  it.runIf(hasNginx)(
    "refuses every spelling of every §8 route through nginx (nginx/nginx.conf), and none reaches the chat instance",
    async () => {
      await expectNothingReachesTheChat(nginx!.port);
    },
    60_000,
  );

  // Last: it registers its own listing and people, apart from those the sweeps check were left alone.
  it("answers every §8 route on the chat port with the token (401 without), and the chat instance counts each", async () => {
    const listing = LISTING + 1;
    const [seller, buyer] = [SELLER + 10, BUYER + 10];
    const token = { "x-internal-token": internalToken };
    const call = (method: string, path: string, body: unknown, headers: Record<string, string>) =>
      http(chat.baseUrl, method, path, { headers, body });
    const listingBody = {
      seller_id: seller,
      title: "Desk lamp",
      price_minor: 2_500,
      currency: "EUR",
      image_url: "https://example.com/i/2.jpg",
      url: "https://example.com/l/2",
      status: "active",
    };
    const countsBefore = await chatRequestCounts(chat);

    // Without the token: 401 for each (with the bodies the sweeps send).
    for (const route of platformRoutes(ids)) {
      const refused = await call(route.method, route.path, route.body, {});
      expect(refused.status, `${route.method} ${route.path}`).toBe(401);
      expect(refused.body.error.code).toBe("unauthorized");
    }

    const put = await call("PUT", `/internal/chat/listings/${listing}`, listingBody, token);
    expect(put.status).toBe(200);
    expect(put.body).toMatchObject({ id: listing, seller_id: seller, title: "Desk lamp" });
    const person = await call(
      "PUT",
      `/internal/chat/users/${seller}`,
      { display_name: "Sam", avatar_url: null },
      token,
    );
    expect(person.status).toBe(200);
    expect(person.body).toEqual({ id: seller, display_name: "Sam", avatar_url: null });
    const opened = await call("POST", "/internal/chat/chats", { listing_id: listing, buyer_id: buyer }, token);
    expect(opened.status).toBe(201);
    expect(opened.body).toMatchObject({ listing_id: listing, buyer_id: buyer, seller_id: seller });
    expect(opened.body.peer).toEqual({ id: seller, display_name: "Sam", avatar_url: null });
    const chatId = opened.body.id as number;
    const systemBody = { content: "Offer accepted", data: { offer_minor: 2_000 }, client_msg_id: `offer-${chatId}` };
    const system = await call("POST", `/internal/chat/chats/${chatId}/messages`, systemBody, token);
    expect(system.status).toBe(201);
    expect(system.body).toMatchObject({ chat_id: chatId, kind: "system", sender_id: null, data: systemBody.data });
    const removed = await call("DELETE", `/internal/chat/messages/${system.body.id}`, { reason: "test" }, token);
    expect(removed.status).toBe(200);
    expect(removed.body).toMatchObject({ id: system.body.id, deleted_by: "platform", content: "" });
    const suspend = await call("POST", `/internal/chat/users/${buyer}/suspend`, { reason: "test" }, token);
    expect(suspend.status).toBe(204);
    // The suspension is real: the buyer's send through the gateway is refused.
    const refusedSend = await gw.api(gw.accessToken(buyer), "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "hi",
    });
    expect(refusedSend.status).toBe(403);
    expect(refusedSend.body.error.code).toBe("user_suspended");
    const lift = await call("DELETE", `/internal/chat/users/${buyer}/suspend`, undefined, token);
    expect(lift.status).toBe(204);

    // The counter saw each route once with a 2xx: the same counter the sweeps above found unmoved.
    const moved = countsMoved(countsBefore, await chatRequestCounts(chat));
    const answered = Object.entries(moved).filter(([key]) => /^\S+ \/internal\/chat\/\S* 2\d\d$/.test(key));
    const routes: [string, RegExp][] = [
      ["PUT", /^\/internal\/chat\/listings\/:\w+$/],
      ["PUT", /^\/internal\/chat\/users\/:\w+$/],
      ["POST", /^\/internal\/chat\/chats$/],
      ["POST", /^\/internal\/chat\/chats\/:\w+\/messages$/],
      ["DELETE", /^\/internal\/chat\/messages\/:\w+$/],
      ["POST", /^\/internal\/chat\/users\/:\w+\/suspend$/],
      ["DELETE", /^\/internal\/chat\/users\/:\w+\/suspend$/],
    ];
    for (const [method, pattern] of routes) {
      const hits = answered.filter(([key]) => {
        const [m, route] = key.split(" ");
        return m === method && pattern.test(route ?? "");
      });
      expect(hits, `${method} ${pattern}`).toEqual([[expect.any(String), 1]]);
    }
    expect(answered).toHaveLength(routes.length);
  }, 60_000);
});
