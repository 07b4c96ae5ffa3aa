import type { Database } from "../db/client.ts";

/** A person's data as JSON lines (CONTRACT §12). Being written by another change. */
export function exportPerson(_db: Database, userId: number): ReadableStream<Uint8Array> {
  throw new Error(`export of user ${userId}: not built yet`);
}
