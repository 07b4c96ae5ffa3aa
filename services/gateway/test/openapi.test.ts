import SwaggerParser from "@apidevtools/swagger-parser";
import { devTokenRequestSchema, Limits, reportBody, sendMessageBody } from "@listings-chat/shared";
import { describe, expect, it } from "vitest";
import { devTokenBody } from "../src/dev/dev-token.ts";
import { buildOpenApiDocument, createDocsRoutes } from "../src/docs/openapi.ts";

type Json = Record<string, any>;

const doc = (devAuth: boolean) => buildOpenApiDocument({ devAuth }) as Json;

/** Follows one local `$ref` ("#/components/schemas/X") inside `document`. */
function deref(document: Json, node: Json): Json {
  if (typeof node.$ref !== "string") return node;
  const [hash, ...parts] = node.$ref.split("/");
  expect(hash).toBe("#");
  return parts.reduce<Json>((at, key) => at[key], document);
}

/** Every operation of the document as [path, method, operation]. */
function operations(document: Json): [string, string, Json][] {
  return Object.entries(document.paths as Json).flatMap(([path, item]) =>
    Object.entries(item as Json).map(([method, op]): [string, string, Json] => [path, method, op as Json]),
  );
}

/** CONTRACT §3 and §4, as path (OpenAPI spelling) and method. */
const contractOperations: [string, string][] = [
  ["/api/v2/ws-token", "post"],
  ["/api/v2/ws-token", "get"],
  ["/ws/chat", "get"],
  ["/api/v1/chats", "post"],
  ["/api/v1/chats", "get"],
  ["/api/v1/chats/{id}/messages", "get"],
  ["/api/v1/chats/{id}/messages", "post"],
  ["/api/v1/messages/{id}", "patch"],
  ["/api/v1/messages/{id}", "delete"],
  ["/api/v1/chats/{id}/read", "post"],
  ["/api/v1/chats/unread", "get"],
  ["/api/v1/events", "get"],
  // CONTRACT §10.
  ["/api/v1/users/{id}/block", "post"],
  ["/api/v1/users/{id}/block", "delete"],
  ["/api/v1/blocks", "get"],
  ["/api/v1/reports", "post"],
  ["/health", "get"],
  ["/ready", "get"],
];

const queryParam = (op: Json, name: string): Json => {
  const param = (op.parameters as Json[]).find((p) => p.in === "query" && p.name === name);
  expect(param, `query parameter ${name}`).toBeDefined();
  return param as Json;
};

describe("OpenAPI document of the gateway", () => {
  it("has the shape of an OpenAPI 3.1 document", () => {
    const d = doc(false);
    expect(d.openapi).toMatch(/^3\.1\.\d+$/);
    expect(d.info.title).toEqual(expect.any(String));
    expect(d.info.title.length).toBeGreaterThan(0);
    expect(d.info.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(typeof d.paths).toBe("object");
    for (const path of Object.keys(d.paths)) expect(path.startsWith("/")).toBe(true);
  });

  it.each([false, true])("passes @apidevtools/swagger-parser validation (devAuth %s)", async (devAuth) => {
    // validate() dereferences in place: give it a copy.
    const validated = (await SwaggerParser.validate(structuredClone(doc(devAuth)) as any)) as Json;
    expect(validated.openapi).toBe("3.1.0");
  });

  it("the validator does reject a broken document (so the check above means something)", async () => {
    const broken = structuredClone(doc(false));
    delete broken.paths["/health"].get.responses["200"].description; // required in a Response Object
    await expect(SwaggerParser.validate(broken as any)).rejects.toThrow();
    const dangling = structuredClone(doc(false));
    dangling.paths["/health"].get.responses["200"].content["application/json"].schema = {
      $ref: "#/components/schemas/NoSuchSchema",
    };
    await expect(SwaggerParser.validate(dangling as any)).rejects.toThrow();
  });

  it.each([false, true])("has every path and method of CONTRACT §3 and §4 (devAuth %s)", (devAuth) => {
    const d = doc(devAuth);
    for (const [path, method] of contractOperations) {
      expect(d.paths[path]?.[method], `${method.toUpperCase()} ${path}`).toBeDefined();
    }
    const ids = operations(d).map(([, , op]) => op.operationId);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("has POST /api/dev/token only with devAuth", () => {
    expect(doc(false).paths["/api/dev/token"]).toBeUndefined();

    const withDev = doc(true);
    const devToken = withDev.paths["/api/dev/token"]?.post;
    expect(devToken).toBeDefined();
    expect(devToken.security).toEqual([]);
    const body = deref(withDev, devToken.requestBody.content["application/json"].schema);
    expect(body.required).toEqual(["user_id"]);
    expect(body.properties.user_id.type).toBe("integer");
    const answer = deref(withDev, devToken.responses["200"].content["application/json"].schema);
    expect(answer.required).toEqual(["access_token"]);
    expect(devToken.responses["400"].content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/ErrorBody",
    });
  });

  it("documents a dev-token body that accepts exactly what the gateway's validator (dev-token.ts) accepts", () => {
    for (const body of [
      { user_id: 5 },
      { user_id: Number.MAX_SAFE_INTEGER },
      { user_id: Number.MAX_SAFE_INTEGER + 1 },
      { user_id: 0 },
      { user_id: -1 },
      { user_id: 1.5 },
      { user_id: "5" },
      {},
    ]) {
      expect(devTokenRequestSchema.safeParse(body).success, JSON.stringify(body)).toBe(
        devTokenBody.safeParse(body).success,
      );
    }
    expect(devTokenBody.safeParse({ user_id: 5 }).success).toBe(true);
    expect(devTokenBody.safeParse({ user_id: 0 }).success).toBe(false);
  });

  it("POST /api/v1/chats/{id}/messages requires content of at most 4000 code points, not only white space", () => {
    const d = doc(false);
    const op = d.paths["/api/v1/chats/{id}/messages"].post;
    expect(op.requestBody.required).toBe(true);
    const body = deref(d, op.requestBody.content["application/json"].schema);
    expect(body.type).toBe("object");
    expect(body.required).toEqual(["content"]);
    const content = body.properties.content;
    expect(content.type).toBe("string");
    expect(content.maxLength).toBe(4000);
    expect(content.maxLength).toBe(Limits.maxContentChars);
    expect(content.minLength).toBe(1);
    expect(body.properties.client_msg_id).toMatchObject({ type: "string", minLength: 1, maxLength: 64 });

    // The documented keywords say what the validator the chat service uses actually does.
    const notBlank = new RegExp(content.pattern, "u");
    const cases: [string, boolean][] = [
      ["hello", true],
      ["a".repeat(4000), true],
      ["😀".repeat(4000), true], // 8000 UTF-16 units, 4000 code points: JSON Schema counts code points too
      ["a".repeat(4001), false],
      ["", false],
      [" \t\n\u00a0", false],
    ];
    for (const [text, accepted] of cases) {
      expect(sendMessageBody.safeParse({ content: text }).success, JSON.stringify(text.slice(0, 8))).toBe(accepted);
      const documented = [...text].length >= content.minLength && [...text].length <= content.maxLength;
      expect(documented && notBlank.test(text), JSON.stringify(text.slice(0, 8))).toBe(accepted);
    }
  });

  it("POST /api/v1/reports documents what its validator (reportBody) accepts: one target, a bounded note", () => {
    const d = doc(false);
    const op = d.paths["/api/v1/reports"].post;
    const body = deref(d, op.requestBody.content["application/json"].schema);
    expect(body.required).toEqual(["reason"]);
    expect(body.properties.reason.enum).toEqual(["spam", "scam", "harassment", "inappropriate", "other"]);
    expect(body.properties.note.type).toEqual(["string", "null"]);
    const noteLimit = body.properties.note.maxLength;
    expect(noteLimit).toBe(Limits.reportNoteChars);
    const targets = ["message_id", "chat_id", "user_id"];
    /** What the document says of a body: one target exactly (oneOf), a known reason, a note not too long. */
    const documented = (b: Json) =>
      (body.oneOf as Json[]).filter((one) => (one.required as string[]).every((k) => k in b)).length === 1 &&
      body.properties.reason.enum.includes(b.reason) &&
      (b.note === undefined || b.note === null || [...b.note].length <= noteLimit) &&
      targets.every((k) => b[k] === undefined || (Number.isInteger(b[k]) && b[k] > 0));
    for (const b of [
      { reason: "spam", chat_id: 1 },
      { reason: "scam", message_id: 2, note: "é".repeat(Limits.reportNoteChars) },
      { reason: "other", user_id: 3, note: null },
      { reason: "spam" },
      { reason: "spam", chat_id: 1, user_id: 3 },
      { reason: "spam", message_id: 1, chat_id: 1, user_id: 3 },
      { reason: "boring", chat_id: 1 },
      { reason: "spam", chat_id: 0 },
      { reason: "spam", chat_id: 1, note: "x".repeat(Limits.reportNoteChars + 1) },
    ]) {
      expect(documented(b), JSON.stringify(b).slice(0, 80)).toBe(reportBody.safeParse(b).success);
    }
    expect(Object.keys(op.responses).sort()).toEqual(["200", "201", "400", "401", "404", "429", "502", "503", "504"]);
  });

  it("PATCH /api/v1/messages/{id} documents the same content constraint", () => {
    const d = doc(false);
    const body = deref(d, d.paths["/api/v1/messages/{id}"].patch.requestBody.content["application/json"].schema);
    expect(body.required).toEqual(["content"]);
    expect(body.properties.content.maxLength).toBe(Limits.maxContentChars);
  });

  it('every 401 answer has the {"error": {"code", "message"}} body', () => {
    const d = doc(true);
    const errorBody = d.components.schemas.ErrorBody;
    expect(errorBody.required).toEqual(["error"]);
    expect(errorBody.properties.error.required).toEqual(["code", "message"]);
    expect(errorBody.properties.error.properties.code.type).toBe("string");
    expect(errorBody.properties.error.properties.message.type).toBe("string");

    const with401 = operations(d).filter(([, , op]) => op.responses["401"]);
    // ws-token (2), the upgrade, and the nine forwarded /api/v1 operations.
    expect(with401.map(([path, method]) => `${method} ${path}`).sort()).toEqual(
      contractOperations
        .filter(([path]) => path !== "/health" && path !== "/ready")
        .map(([path, method]) => `${method} ${path}`)
        .sort(),
    );
    for (const [path, method, op] of with401) {
      expect(op.responses["401"].content["application/json"].schema, `${method} ${path}`).toEqual({
        $ref: "#/components/schemas/ErrorBody",
      });
    }
    // Every other error answer too.
    for (const [path, method, op] of operations(d)) {
      for (const [status, answer] of Object.entries(op.responses as Json)) {
        if (Number(status) < 400) continue;
        expect(answer.content["application/json"].schema, `${method} ${path} ${status}`).toEqual({
          $ref: "#/components/schemas/ErrorBody",
        });
      }
    }
  });

  it("declares the bearer and the access_token cookie schemes, and which operations need them", () => {
    const d = doc(false);
    expect(d.components.securitySchemes.bearerAuth).toMatchObject({ type: "http", scheme: "bearer" });
    expect(d.components.securitySchemes.cookieAuth).toEqual(
      expect.objectContaining({ type: "apiKey", in: "cookie", name: "access_token" }),
    );
    const either = [{ bearerAuth: [] }, { cookieAuth: [] }];
    for (const [path, method, op] of operations(d)) {
      const needsAccessToken = path.startsWith("/api/v1/") || path === "/api/v2/ws-token";
      expect(op.security, `${method} ${path}`).toEqual(needsAccessToken ? either : []);
    }
  });

  it("documents GET /ws/chat as an upgrade with token and after, answering 101/401/429/503", () => {
    const d = doc(false);
    const op = d.paths["/ws/chat"].get;
    expect(queryParam(op, "token")).toMatchObject({ required: true, schema: { type: "string" } });
    expect(queryParam(op, "after")).toMatchObject({ required: false, schema: { type: "integer", minimum: 0 } });
    // 400: a bad `after` (services/gateway/src/proxy/ws-upgrade.ts refuses it before the upgrade).
    expect(Object.keys(op.responses).sort()).toEqual(["101", "400", "401", "429", "503"]);
    expect(op.description).toContain("README");
    expect(op.description).toContain("WebSocket protocol");
  });

  it("documents ws-token answers with Cache-Control: no-store", () => {
    const d = doc(false);
    for (const method of ["get", "post"]) {
      const ok = d.paths["/api/v2/ws-token"][method].responses["200"];
      expect(ok.headers["Cache-Control"].schema).toEqual({ type: "string", enum: ["no-store"] });
      expect(deref(d, ok.content["application/json"].schema).required).toEqual(["token", "expires_in", "ws_url"]);
    }
  });

  it("documents the query parameters with their defaults and maxima", () => {
    const d = doc(false);
    const messages = d.paths["/api/v1/chats/{id}/messages"].get;
    expect(queryParam(messages, "before")).toMatchObject({ required: false, schema: { type: "integer" } });
    expect(queryParam(messages, "limit")).toMatchObject({
      required: false,
      schema: { type: "integer", minimum: 1, default: 20, maximum: 100 },
    });
    expect(messages.parameters.find((p: Json) => p.in === "path")).toMatchObject({ name: "id", required: true });

    const events = d.paths["/api/v1/events"].get;
    expect(queryParam(events, "after")).toMatchObject({ required: false, schema: { type: "integer", minimum: 0 } });
    expect(queryParam(events, "limit")).toMatchObject({ schema: { default: 100, maximum: 500 } });

    const chats = d.paths["/api/v1/chats"].get;
    expect(queryParam(chats, "limit")).toMatchObject({ schema: { default: 100, maximum: 500 } });
  });

  it("names the response schemas, with Message never null itself and last_message nullable", () => {
    const d = doc(false);
    const schemas = d.components.schemas;
    for (const name of [
      "Message",
      "Chat",
      "ChatSummary",
      "ChatEvent",
      "ErrorBody",
      "WsTokenResponse",
      "Unread",
      "MessagesPage",
      "ChatsList",
      "EventsPage",
      "ReadResult",
    ]) {
      expect(schemas[name], name).toBeDefined();
    }
    expect(schemas.Message.type).toBe("object");
    expect(schemas.Message.required).toEqual([
      "id",
      "chat_id",
      "sender_id",
      "content",
      "client_msg_id",
      "created_at",
      "edited_at",
      "deleted_at",
    ]);
    expect(schemas.ChatSummary.properties.last_message).toEqual({
      anyOf: [{ $ref: "#/components/schemas/Message" }, { type: "null" }],
    });
    expect(Object.keys(schemas.ChatEvent.discriminator.mapping).sort()).toEqual([
      "chat_created",
      "message_deleted",
      "message_edited",
      "message_read",
      "new_message",
      "user_blocked",
      "user_unblocked",
    ]);
    const sendAnswers = d.paths["/api/v1/chats/{id}/messages"].post.responses;
    expect(sendAnswers["201"].content["application/json"].schema).toEqual({ $ref: "#/components/schemas/Message" });
    expect(sendAnswers["429"].headers["Retry-After"]).toBeDefined();
  });
});

describe("GET /api/docs", () => {
  it("answers 200 with the document as JSON", async () => {
    const res = await createDocsRoutes({ devAuth: false }).request("/api/docs");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await res.json()).toEqual(buildOpenApiDocument({ devAuth: false }));
  });

  it("serves the devAuth document when created with devAuth", async () => {
    const body = (await (await createDocsRoutes({ devAuth: true }).request("/api/docs")).json()) as Json;
    expect(body.paths["/api/dev/token"].post).toBeDefined();
  });

  it("answers nothing else", async () => {
    const res = await createDocsRoutes({ devAuth: false }).request("/api/docs/other");
    expect(res.status).toBe(404);
  });
});
