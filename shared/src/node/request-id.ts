import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";

/**
 * Request ids: one per REST request or upgrade, taken from `X-Request-Id` when the caller sent a sane one
 * (the nginx edge, the gateway on the internal hop) or made here, answered in the same header, passed on
 * to the chat instance, and written in every log line made while the request is handled (logger.ts reads
 * it through AsyncLocalStorage, so no function has to pass it along).
 */
export const REQUEST_ID_HEADER = "x-request-id";

/** What a request id may look like: short, and nothing a log line or a header could be abused with. */
const SANE = /^[A-Za-z0-9._:-]{1,64}$/;

const current = new AsyncLocalStorage<string>();

/** The caller's id when it is sane, otherwise a new one. */
export function requestIdFrom(header: string | string[] | null | undefined): string {
  const value = Array.isArray(header) ? header[0] : header;
  return value && SANE.test(value) ? value : randomUUID();
}

/** Runs `work` (and everything it starts) as the handling of request `id`. */
export function withRequestId<T>(id: string, work: () => T): T {
  return current.run(id, work);
}

/** The id of the request being handled, if any. */
export function currentRequestId(): string | undefined {
  return current.getStore();
}
