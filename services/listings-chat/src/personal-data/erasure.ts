import type { Message } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import type { Logger } from "pino";
import type { Database } from "../db/client.ts";
import { executeWrite } from "../db/retry.ts";
import { type AddressedEvent, type AppendedRow, addressedEvents, rowsOf } from "../events/log.ts";
import type { PublishEvent } from "../events/publisher.ts";
import { createWakeLoop } from "../wake-loop.ts";

/** Messages erased per transaction: a chat's two stream rows and this many message rows, held for milliseconds. */
export const ERASURE_BATCH = 200;
/** How often an instance looks for erasures no instance is working (one left by an instance that stopped or died). */
export const ERASURE_POLL_MS = 5_000;
/**
 * Erasures an instance looks at per poll, oldest first: all of them in practice (a marketplace gets a few a day), so
 * that erasures waiting for their photos or held by another instance never keep a newer one from starting.
 */
const ERASURES_PER_POLL = 1_000;
/** How soon an instance looks again at an erasure that waits: the poll is for erasures other instances left. */
const WAITING_RETRY_MS = 1_000;

interface StepRow extends AppendedRow {
  status: "busy" | "worked" | "waiting" | "restarted" | "waiting_uploads" | "erased";
  message: Message | null;
}

export type ErasureStep =
  | { status: "busy" | "waiting" | "restarted" | "waiting_uploads" | "erased" }
  | { status: "worked"; events: AddressedEvent[] };

/**
 * Records the erasure of `userId` and suspends them (lc_request_erasure): true when it is under way from now on,
 * false when it already was.
 */
export async function requestErasure(db: Database, userId: number): Promise<boolean> {
  const rows = rowsOf<{ started: boolean }>(
    await executeWrite(db, sql`select lc_request_erasure(${userId}) as started`),
  );
  return rows[0]?.started === true;
}

/**
 * One batch of the erasure of `userId` (lc_erasure_step), in a transaction of its own. `putWindowS`: how long after
 * its grant an upload's bytes may still arrive (the presigned PUT's lifetime and a margin for clocks).
 */
export async function erasureStep(
  db: Database,
  userId: number,
  batch: number,
  putWindowS: number,
): Promise<ErasureStep> {
  const rows = rowsOf<StepRow>(
    await executeWrite(db, sql`select * from lc_erasure_step(${userId}, ${batch}, ${putWindowS})`),
  );
  const status = rows[0]?.status;
  if (!status) throw new Error("lc_erasure_step returned no row");
  if (status !== "worked") return { status };
  // One message_deleted per message, to each participant: the rows of one message share its JSON.
  const byMessage = new Map<number, StepRow[]>();
  for (const row of rows) {
    if (!row.message) continue;
    const same = byMessage.get(row.message.id) ?? [];
    same.push(row);
    byMessage.set(row.message.id, same);
  }
  const events = [...byMessage.values()].flatMap((same) => {
    const message = same[0]!.message!;
    return addressedEvents(same, { type: "message_deleted", chat_id: message.chat_id, message });
  });
  return { status, events };
}

/** The erasures under way, oldest first. */
async function pendingErasures(db: Database, limit: number): Promise<number[]> {
  const rows = rowsOf<{ user_id: string | number }>(
    await db.execute(
      sql`select user_id from erasures where completed_at is null order by requested_at, user_id limit ${limit}`,
    ),
  );
  return rows.map((row) => Number(row.user_id));
}

/** `erasures` of `/internal/chat/ws/stats`: the erasures under way in the deployment. */
export interface ErasureStatus {
  pending: number;
  /** Since when the oldest of them was requested, in seconds; 0 when none is under way (as the webhooks' age). */
  oldest_pending_s: number;
}

/** The erasures under way (erasures_pending_idx: the few rows not completed). */
export function readErasureStatus(db: Database): () => Promise<ErasureStatus> {
  return async () => {
    const [row] = rowsOf<ErasureStatus>(
      await db.execute(sql`
        select count(*)::int as pending, coalesce(floor(extract(epoch from now() - min(requested_at))), 0)::int as oldest_pending_s
        from erasures where completed_at is null`),
    );
    return row ?? { pending: 0, oldest_pending_s: 0 };
  };
}

export interface ErasuresOptions {
  db: Database;
  publish: PublishEvent;
  log: Logger;
  /** Sweeps the photos due now (media/sweeper.ts); absent when this instance has no storage. */
  sweepPhotos?: () => Promise<number>;
  /** After the request is stored: the person's sockets, here and on every instance, are to close (4003). */
  onSuspended: (userId: number) => void;
  /** How long after its grant an upload's bytes may still arrive: the presigned PUT's lifetime and a margin. */
  putWindowS: number;
  batch?: number;
  pollMs?: number;
}

export type Erasures = ReturnType<typeof createErasures>;

/**
 * Erasures of people (CONTRACT §12): recorded by `request` with the person's suspension, then worked a batch per
 * transaction (lc_erasure_step), each batch's message_deleted published after its commit. Woken by a request
 * here, and every `pollMs` for erasures another instance left (it stopped, or died: its batch rolled back and
 * the row is free again); an erasure is worked by one instance at a time (SKIP LOCKED).
 */
export function createErasures({
  db,
  publish,
  log,
  sweepPhotos,
  onSuspended,
  putWindowS,
  batch = ERASURE_BATCH,
  pollMs = ERASURE_POLL_MS,
}: ErasuresOptions) {
  /** A look again in a second, for an erasure waiting (for older transactions to end, or for its photos). */
  let again: NodeJS.Timeout | undefined;
  const soon = () => {
    if (again) return;
    again = setTimeout(() => {
      again = undefined;
      loop.wake();
    }, WAITING_RETRY_MS);
    again.unref();
  };
  /** Erasures waiting for photos this instance cannot remove (no storage): warned of once. */
  const warnedWaiting = new Set<number>();

  /** Works one erasure until it is done, another instance holds it, or it waits for its photos. */
  async function work(userId: number, isStopped: () => boolean) {
    while (!isStopped()) {
      const step = await erasureStep(db, userId, batch, putWindowS);
      if (step.status === "worked") {
        publish(step.events);
        continue;
      }
      if (step.status === "restarted") {
        log.info({ user: userId }, "an erasure starts over: something of theirs was stored after it began");
        continue;
      }
      if (step.status === "erased") {
        warnedWaiting.delete(userId);
        log.info({ user: userId }, "person erased");
        return;
      }
      if (step.status === "waiting" || step.status === "waiting_uploads") soon();
      if (step.status === "waiting_uploads") {
        // Due ones go now; others are due once their presigned PUT has run out, or held by a sweep elsewhere.
        // A storage that is down fails each sweep: the sweeper says so once, and this erasure looks again in a second.
        const removed = sweepPhotos ? await sweepPhotos().catch(() => 0) : 0;
        if (removed > 0) continue;
        if (!sweepPhotos && !warnedWaiting.has(userId)) {
          warnedWaiting.add(userId);
          log.warn(
            { user: userId },
            "an erasure waits for its photos to be removed, and this instance has no storage (STORAGE): an instance with one removes them",
          );
        }
      }
      return;
    }
  }

  const loop = createWakeLoop({
    async drain(isStopped) {
      for (const userId of await pendingErasures(db, ERASURES_PER_POLL)) {
        if (isStopped()) return;
        // One that fails (its batch rolled back) is tried again at the next poll; the others go on now.
        await work(userId, isStopped).catch((error: unknown) =>
          log.warn({ err: error, user: userId }, "an erasure batch failed; it is retried within a few seconds"),
        );
      }
    },
    // The list of erasures could not be read: the next wake or poll reads it again.
    onError: (error) => log.warn({ err: error }, "could not read the erasures under way; retried within a few seconds"),
    pollMs,
  });

  return {
    /** Records the erasure (idempotent), closes the person's sockets and starts working it. */
    async request(userId: number): Promise<void> {
      const started = await requestErasure(db, userId);
      onSuspended(userId);
      if (started) log.info({ user: userId }, "erasure requested");
      loop.wake();
    },
    /** Looks for erasures under way now and every `pollMs`. */
    start: loop.start,
    wake: loop.wake,
    /** Stops after the batch under way (its events are published); the rest is left for any instance. */
    async stop() {
      clearTimeout(again);
      await loop.stop();
    },
  };
}
