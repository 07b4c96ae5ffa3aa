import { describe, expect, it } from "vitest";
import { ChatApi, ChatApiError } from "./rest.ts";

/** A fetch that records each request and answers with the next canned answer. */
function recordingFetch(answers: Array<{ status: number; body?: unknown }>) {
  const requests: Array<{ method: string; url: string; body: unknown; authorization: string | null }> = [];
  const fetchImpl = (async (url: string, init: RequestInit) => {
    const headers = new Headers(init.headers);
    requests.push({
      method: init.method ?? "GET",
      url,
      body: init.body === undefined ? undefined : JSON.parse(String(init.body)),
      authorization: headers.get("authorization"),
    });
    const answer = answers.shift() ?? { status: 500 };
    return new Response(answer.body === undefined ? null : JSON.stringify(answer.body), { status: answer.status });
  }) as unknown as typeof fetch;
  return { requests, fetchImpl };
}

describe("ChatApi blocks and reports (CONTRACT §10)", () => {
  it("blocks, unblocks, lists blocks and reports through the gateway's paths, with the access token", async () => {
    const { requests, fetchImpl } = recordingFetch([
      { status: 204 },
      { status: 204 },
      { status: 200, body: { blocks: [{ user_id: 7, created_at: "2026-12-06T10:00:00.000Z" }] } },
      { status: 201, body: { id: 41 } },
    ]);
    const api = new ChatApi("https://chat.example", () => "token-1", fetchImpl);
    await api.block(7);
    await api.unblock(7);
    expect(await api.blocks()).toEqual([{ user_id: 7, created_at: "2026-12-06T10:00:00.000Z" }]);
    expect(await api.report({ reason: "scam", note: "asks for a deposit", message_id: 12 })).toEqual({ id: 41 });
    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      "POST https://chat.example/api/v1/users/7/block",
      "DELETE https://chat.example/api/v1/users/7/block",
      "GET https://chat.example/api/v1/blocks",
      "POST https://chat.example/api/v1/reports",
    ]);
    expect(requests[3]?.body).toEqual({ reason: "scam", note: "asks for a deposit", message_id: 12 });
    expect(requests.every((r) => r.authorization === "Bearer token-1")).toBe(true);
  });

  it("turns a refusal into a ChatApiError with the server's code", async () => {
    const { fetchImpl } = recordingFetch([
      { status: 403, body: { error: { code: "blocked", message: "you cannot write to this user" } } },
    ]);
    const api = new ChatApi("", () => "t", fetchImpl);
    const error = await api.block(7).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ChatApiError);
    expect(error).toMatchObject({ status: 403, code: "blocked", retryable: false });
  });
});
