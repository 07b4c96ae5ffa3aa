import type { Chat } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import type { Logger } from "pino";
import { eachUsersChat } from "../chats/repository.ts";
import type { Database } from "../db/client.ts";
import { executeWrite } from "../db/retry.ts";
import { type AddressedEvent, type AppendedRow, rowsOf } from "../events/log.ts";
import type { PublishEvent } from "../events/publisher.ts";
import { createWakeLoop } from "../wake-loop.ts";

/** Chats told per transaction: 200 stream rows locked at most, for a few milliseconds. */
export const FANOUT_BATCH_CHATS = 100;
/** How often an instance looks for a fan-out that no instance is doing (one left by an instance that died). */
export const FANOUT_POLL_MS = 5_000;

interface StepRow extends AppendedRow {
  status: "idle" | "told";
  listing_id: string | number | null;
  chat: Chat | null;
}

/**
 * One batch of some listing's fan-out (`lc_listing_fanout_step`), in a transaction of its own: the events it
 * appended, or `undefined` when no fan-out is waiting (or every waiting one is another instance's now).
 */
export async function fanoutStep(db: Database, batchChats: number): Promise<AddressedEvent[] | undefined> {
  const rows = rowsOf<StepRow>(await executeWrite(db, sql`select * from lc_listing_fanout_step(${batchChats})`));
  if (rows[0]?.status !== "told") return undefined;
  return eachUsersChat(rows, "chat_updated");
}

export interface ListingFanoutOptions {
  db: Database;
  publish: PublishEvent;
  log: Logger;
  batchChats?: number;
  pollMs?: number;
}

export type ListingFanout = ReturnType<typeof createListingFanout>;

/**
 * Tells every participant of every chat on a changed listing (CONTRACT §8), from the fan-outs that the
 * listing's PUT recorded in its own transaction (listing_fanouts): a batch at a time, each published after its
 * commit. Woken by a PUT on this instance, and every `pollMs` for fan-outs an instance left unfinished (it
 * stopped, or died: its batch rolled back and its row is free again); any instance may take any fan-out, one
 * at a time each (FOR UPDATE SKIP LOCKED).
 */
export function createListingFanout({
  db,
  publish,
  log,
  batchChats = FANOUT_BATCH_CHATS,
  pollMs = FANOUT_POLL_MS,
}: ListingFanoutOptions) {
  const loop = createWakeLoop({
    async drain(isStopped) {
      while (!isStopped()) {
        const events = await fanoutStep(db, batchChats);
        if (!events) return;
        publish(events);
      }
    },
    // The batch rolled back: it is done again by the next wake or poll, here or elsewhere.
    onError: (error) => log.warn({ err: error }, "a listing fan-out batch failed; it is retried within a few seconds"),
    pollMs,
  });

  return {
    /** Looks for waiting fan-outs now and every `pollMs`. */
    start: loop.start,
    /** A listing changed here: its fan-out is waiting. */
    wake: loop.wake,
    /** Stops after the batch under way (its events are published); the rest is left for any instance. */
    stop: loop.stop,
  };
}
