/**
 * The answers a real chat instance gives through a real gateway, checked against the OpenAPI document the
 * gateway serves (`GET /api/docs`): each status must be documented for its operation, each JSON body must
 * validate against the documented schema, and each error code must be named in that status's description
 * (support/openapi-answers.ts). The walk covers every public route and the shapes and refusals CONTRACT §8
 * adds: chats with `listing`, `peer` and `archived`; system messages and platform deletes; `chat_updated`;
 * the archive; `user_suspended`, `listing_closed`, and `forbidden` on a system message.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultContentRulesOptions } from "../../listings-chat/src/safety/content-rules.ts";
import { parseContentRules } from "../../listings-chat/src/safety/content-rules-file.ts";
import {
  type E2EChat,
  type E2EGateway,
  type HttpAnswer,
  http,
  randomSecret,
  startE2EChat,
  startE2EGateway,
} from "./support/e2e.ts";
import { type AnswerCheck, answerChecker } from "./support/openapi-answers.ts";

const internalToken = randomSecret();
const LISTING = 31_001;
const OTHER_LISTING = 31_002;
const SELLER = 8201;
const BUYER = 8202;
const OTHER_BUYER = 8203;

const listingBody = (sellerId: number, status = "active") => ({
  seller_id: sellerId,
  title: "Oak table, 180 cm",
  price_minor: 32_000,
  currency: "EUR",
  image_url: "https://example.com/i/table.jpg",
  url: "https://example.com/l/table",
  status,
});

describe("answers of a chat instance through the gateway, against the OpenAPI document", () => {
  let chat: E2EChat;
  let gw: E2EGateway;
  let check: AnswerCheck;
  /** `METHOD template status` of every answer checked, to show the walk covered what it meant to. */
  const checked = new Set<string>();

  beforeAll(async () => {
    // The shipped rules, and one that rejects (CONTRACT §10), to see a 422 as the document says it.
    const contentRules = {
      ...defaultContentRulesOptions,
      rules: [
        ...defaultContentRulesOptions.rules,
        ...parseContentRules(
          JSON.stringify({ rules: [{ id: "wire", match: { words: ["western union"] }, action: "reject" }] }),
          "(test)",
        ),
      ],
    };
    chat = await startE2EChat({ database: { inMemory: true }, internalToken, contentRules });
    gw = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken });
    const served = await http(gw.baseUrl, "GET", "/api/docs");
    expect(served.status).toBe(200);
    check = answerChecker(served.body);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
    await chat?.stop();
  });

  /** The platform's call on the chat port (CONTRACT §8; not in the public document). */
  async function platform(method: string, path: string, body?: unknown): Promise<HttpAnswer> {
    return http(chat.baseUrl, method, path, { headers: { "x-internal-token": internalToken }, body });
  }

  /** A user's call through the gateway, its status as expected, its answer as the document says. */
  async function api(
    userId: number,
    method: string,
    path: string,
    template: string,
    expected: number,
    body?: unknown,
  ): Promise<HttpAnswer> {
    const answer = await gw.api(gw.accessToken(userId), method, path, body);
    expect(answer.status, `${method} ${path}: ${answer.text}`).toBe(expected);
    const templatePath = template.replace(/\?.*$/, "");
    expect(check.problems(templatePath, method, answer.status, answer.body), `${method} ${path}`).toEqual([]);
    checked.add(`${method} ${templatePath} ${answer.status}`);
    return answer;
  }

  it("walks every public route and the refusals of §8; every answer is as documented", async () => {
    for (const [id, sellerId] of [
      [LISTING, SELLER],
      [OTHER_LISTING, SELLER],
    ] as const) {
      expect((await platform("PUT", `/internal/chat/listings/${id}`, listingBody(sellerId))).status).toBe(200);
    }
    for (const [id, name] of [
      [SELLER, "Sam Seller"],
      [BUYER, "Bea Buyer"],
    ] as const) {
      const person = await platform("PUT", `/internal/chat/users/${id}`, {
        display_name: name,
        avatar_url: `https://example.com/a/${id}.png`,
      });
      expect(person.status).toBe(200);
    }

    // Chats: open (201, then 200), the list, with listing and peer.
    const open = { listing_id: LISTING, seller_id: SELLER };
    const created = await api(BUYER, "POST", "/api/v1/chats", "/api/v1/chats", 201, open);
    expect(created.body.listing).toMatchObject({ id: LISTING, title: "Oak table, 180 cm", status: "active" });
    expect(created.body.peer).toMatchObject({ id: SELLER, display_name: "Sam Seller" });
    expect(created.body.archived).toBe(false);
    await api(BUYER, "POST", "/api/v1/chats", "/api/v1/chats", 200, open);
    const chatId = created.body.id as number;
    const list = await api(SELLER, "GET", "/api/v1/chats", "/api/v1/chats", 200);
    expect(list.body.chats.map((c: { peer: { display_name: string } }) => c.peer.display_name)).toEqual(["Bea Buyer"]);

    // Messages: send (201, repeat 200), a system message, the page, edit, read, unread.
    const messagesPath = `/api/v1/chats/${chatId}/messages`;
    const messagesTemplate = "/api/v1/chats/{id}/messages";
    const first = { content: "Is it still available?", client_msg_id: "walk-1" };
    const sent = await api(BUYER, "POST", messagesPath, messagesTemplate, 201, first);
    expect(sent.body).toMatchObject({ kind: "text", sender_id: BUYER, data: null, attachments: [], deleted_by: null });
    await api(BUYER, "POST", messagesPath, messagesTemplate, 200, first);
    const system = await platform("POST", `/internal/chat/chats/${chatId}/messages`, {
      content: "Sam made an offer",
      data: { offer_minor: 30_000 },
      client_msg_id: "offer-1",
    });
    expect(system.status).toBe(201);
    const page = await api(SELLER, "GET", messagesPath, messagesTemplate, 200);
    expect(page.body.messages[0]).toMatchObject({ kind: "system", sender_id: null, data: { offer_minor: 30_000 } });
    const systemPath = `/api/v1/messages/${system.body.id}`;
    const forbiddenEdit = await api(BUYER, "PATCH", systemPath, "/api/v1/messages/{id}", 403, { content: "mine now" });
    expect(forbiddenEdit.body.error.code).toBe("forbidden");
    const forbiddenDelete = await api(SELLER, "DELETE", systemPath, "/api/v1/messages/{id}", 403);
    expect(forbiddenDelete.body.error.code).toBe("forbidden");
    const edited = await api(BUYER, "PATCH", `/api/v1/messages/${sent.body.id}`, "/api/v1/messages/{id}", 200, {
      content: "Is it still available? Pick-up in Lyon.",
    });
    expect(edited.body.edited_at).not.toBeNull();
    await api(SELLER, "POST", `/api/v1/chats/${chatId}/read`, "/api/v1/chats/{id}/read", 200, {
      message_id: system.body.id,
    });
    await api(BUYER, "GET", "/api/v1/chats/unread", "/api/v1/chats/unread", 200);

    // Deletes: one by its sender, one by the platform; the page shows both as such.
    const second = await api(BUYER, "POST", messagesPath, messagesTemplate, 201, { content: "typo" });
    const own = await api(BUYER, "DELETE", `/api/v1/messages/${second.body.id}`, "/api/v1/messages/{id}", 200);
    expect(own.body).toMatchObject({ content: "", deleted_by: "sender" });
    expect((await platform("DELETE", `/internal/chat/messages/${sent.body.id}`, { reason: "scam" })).status).toBe(200);
    const afterDeletes = await api(BUYER, "GET", `${messagesPath}?limit=100`, messagesTemplate, 200);
    const deletedBy = Object.fromEntries(
      afterDeletes.body.messages.map((m: { id: number; deleted_by: string | null }) => [m.id, m.deleted_by]),
    );
    expect(deletedBy[sent.body.id]).toBe("platform");
    expect(deletedBy[second.body.id]).toBe("sender");

    // Archive: 204 both ways, the archived list, 404 for a chat one takes no part in.
    const archivePath = `/api/v1/chats/${chatId}/archive`;
    const archiveTemplate = "/api/v1/chats/{id}/archive";
    await api(SELLER, "POST", archivePath, archiveTemplate, 204);
    const archived = await api(SELLER, "GET", "/api/v1/chats?archived=1", "/api/v1/chats", 200);
    expect(archived.body.chats.map((c: { id: number; archived: boolean }) => [c.id, c.archived])).toEqual([
      [chatId, true],
    ]);
    expect((await api(SELLER, "GET", "/api/v1/chats", "/api/v1/chats", 200)).body.chats).toEqual([]);
    await api(SELLER, "DELETE", archivePath, archiveTemplate, 204);
    await api(OTHER_BUYER, "POST", archivePath, archiveTemplate, 404);
    await api(OTHER_BUYER, "DELETE", archivePath, archiveTemplate, 404);

    // The event stream: every kind of event above, chat_updated among them, as documented.
    const events = await api(SELLER, "GET", "/api/v1/events?after=0&limit=500", "/api/v1/events", 200);
    const types = new Set(events.body.events.map((e: { type: string }) => e.type));
    for (const type of [
      "chat_created",
      "new_message",
      "message_edited",
      "message_deleted",
      "message_read",
      "chat_updated",
    ]) {
      expect(types.has(type), type).toBe(true);
    }

    // Suspension: sends, edits and opens refused with user_suspended; reads go on.
    const toEdit = await api(BUYER, "POST", messagesPath, messagesTemplate, 201, { content: "edit me later" });
    expect((await platform("POST", `/internal/chat/users/${BUYER}/suspend`, { reason: "walk" })).status).toBe(204);
    const refusedSend = await api(BUYER, "POST", messagesPath, messagesTemplate, 403, { content: "let me in" });
    expect(refusedSend.body.error.code).toBe("user_suspended");
    const refusedEdit = await api(BUYER, "PATCH", `/api/v1/messages/${toEdit.body.id}`, "/api/v1/messages/{id}", 403, {
      content: "edited while suspended",
    });
    expect(refusedEdit.body.error.code).toBe("user_suspended");
    const refusedOpen = await api(BUYER, "POST", "/api/v1/chats", "/api/v1/chats", 403, {
      listing_id: OTHER_LISTING,
      seller_id: SELLER,
    });
    expect(refusedOpen.body.error.code).toBe("user_suspended");
    await api(BUYER, "GET", "/api/v1/chats", "/api/v1/chats", 200);
    await api(BUYER, "GET", messagesPath, messagesTemplate, 200);
    await api(BUYER, "GET", "/api/v1/events?after=0", "/api/v1/events", 200);
    expect((await platform("DELETE", `/internal/chat/users/${BUYER}/suspend`)).status).toBe(204);

    // A removed listing: new messages and new chats refused with listing_closed; reads go on.
    expect((await platform("PUT", `/internal/chat/listings/${LISTING}`, listingBody(SELLER, "removed"))).status).toBe(
      200,
    );
    const closedSend = await api(BUYER, "POST", messagesPath, messagesTemplate, 409, { content: "still there?" });
    expect(closedSend.body.error.code).toBe("listing_closed");
    const closedOpen = await api(OTHER_BUYER, "POST", "/api/v1/chats", "/api/v1/chats", 409, open);
    expect(closedOpen.body.error.code).toBe("listing_closed");
    const listed = await api(BUYER, "GET", "/api/v1/chats", "/api/v1/chats", 200);
    expect(listed.body.chats[0].listing.status).toBe("removed");

    // Other refusals of the same routes.
    await api(BUYER, "POST", messagesPath, messagesTemplate, 400, { content: "   " });
    const rejected = await api(SELLER, "POST", messagesPath, messagesTemplate, 422, { content: "Western Union only" });
    expect(rejected.body.error.code).toBe("content_rejected");
    await api(OTHER_BUYER, "GET", messagesPath, messagesTemplate, 404);
    await api(BUYER, "GET", "/api/v1/chats?archived=maybe", "/api/v1/chats", 400);

    // The walk met each new status it meant to check.
    for (const key of [
      "POST /api/v1/chats 201",
      "POST /api/v1/chats 403",
      "POST /api/v1/chats 409",
      "POST /api/v1/chats/{id}/messages 403",
      "POST /api/v1/chats/{id}/messages 409",
      "PATCH /api/v1/messages/{id} 403",
      "DELETE /api/v1/messages/{id} 403",
      "POST /api/v1/chats/{id}/archive 204",
      "DELETE /api/v1/chats/{id}/archive 204",
      "POST /api/v1/chats/{id}/archive 404",
      "GET /api/v1/events 200",
      "POST /api/v1/chats/{id}/messages 422",
    ]) {
      expect(checked.has(key), key).toBe(true);
    }
  }, 60_000);
});
