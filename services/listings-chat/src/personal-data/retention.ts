import { type SQL, sql } from "drizzle-orm";
import type { Logger } from "pino";
import type { Database } from "../db/client.ts";
import { rowsOf } from "../events/log.ts";

const DAY_MS = 86_400_000;

/** Its row in `scheduled_jobs`. */
export const RETENTION_JOB = "retention";
/** How often a run is due, for the whole deployment (whichever instance takes it). */
export const RETENTION_INTERVAL_MS = 10 * 60_000;
/** How often each instance asks whether a run is due: one conditional UPDATE of one row that matches nothing. */
export const RETENTION_POLL_MS = 60_000;
/** Longest run: what is left waits for the next one, so a backlog (retention turned on late) never makes one run endless. */
export const RETENTION_MAX_RUN_MS = 5 * 60_000;
/**
 * After each batch the run rests this many times as long as the batch took: at most half of one database core is
 * the retention's, the rest stays the writes' (measured: retention.integration.test.ts, a send's p99 during a run).
 */
export const RETENTION_REST_RATIO = 1;

export interface RetentionBatches {
  /** Messages per transaction: their chats, participants and recipients' stream rows are locked for its length. */
  messages: number;
  /** chat_events rows per transaction (no writer waits for them). */
  events: number;
  /**
   * Users whose streams one transaction looks at, and about how many entries of their key it reads at most (so also
   * removes): a user with nothing old costs one (their first event), and at most the next 1,000 event ids when that
   * is within a million ids of the bound (lc_retention_streams_step's margins).
   */
  streamUsers: number;
  streamRows: number;
  /** Webhook deliveries looked at per transaction (the outbox's copies: a message.created holds the text). */
  webhooks: number;
}

/** 200 messages: a few milliseconds of locks on at most 200 chats (measured: retention.integration.test.ts). */
export const defaultRetentionBatches: RetentionBatches = {
  messages: 200,
  events: 2_000,
  streamUsers: 500,
  streamRows: 5_000,
  webhooks: 1_000,
};

/** What a run did: counts, never content. Stored as the job's `last_result` and logged. */
export interface RetentionResult {
  /** Everything created before this went (or is going: `complete` false). */
  cutoff: string;
  messages: number;
  /** Recipients' unread counts the removed messages took. */
  unread: number;
  /** Uploads made due for the photo sweeper, which removes their objects. */
  photos: number;
  chat_events: number;
  user_events: number;
  /** Delivered or dead webhook deliveries older than the cutoff (their copies of messages went with them). */
  webhook_deliveries: number;
  /** Every chat_events id below this is gone; the users' streams lose theirs below it. Carried from run to run. */
  events_bound: number;
  /** Where the pass over the users' streams goes on at the next run (0: from the first user). */
  streams_after_user: number;
  /** Every pass reached its end: the run did not stop at its time bound or on a failure. */
  complete: boolean;
  /** Transactions of each kind, and the longest of each (the most a write could have waited for one's locks). */
  batches: { messages: number; events: number; streams: number; webhooks: number };
  max_batch_ms: { messages: number; events: number; streams: number; webhooks: number };
  ms: number;
  failed?: boolean;
}

interface OutboxStepRow {
  removed: number;
  last_id: string | number | null;
  done: boolean;
}

/**
 * One batch of the outbox's pass: the next `batch` deliveries by id after `after` (oldest first: ids grow with
 * time), those recorded before `cutoff` and delivered or dead (`next_attempt_at` null, checked again on the row
 * itself, so a dead one requeued meanwhile stays) removed. Done at a delivery recorded after the cutoff, or at the
 * end: the pass reads the old prefix only, never the whole outbox.
 */
export function removeOldDeliveries(cutoff: string, after: number, batch: number): SQL {
  return sql`
    with page as (select w.id, w.created_at, w.next_attempt_at from webhook_deliveries w
                  where w.id > ${after} order by w.id limit ${batch}),
    gone as (delete from webhook_deliveries d using page p
             where d.id = p.id and p.created_at < ${cutoff}::timestamptz and p.next_attempt_at is null
               and d.next_attempt_at is null
             returning d.id)
    select (select count(*) from gone)::int as removed, (select max(id) from page) as last_id,
      ((select count(*) from page) < ${batch}
       or exists (select from page where created_at >= ${cutoff}::timestamptz)) as done`;
}

export interface RetentionOptions {
  db: Database;
  log: Logger;
  /** MESSAGE_RETENTION_DAYS. */
  days: number;
  /** The clock the cutoff is computed from (tests set it forward instead of waiting a month). */
  now?: () => number;
  intervalMs?: number;
  pollMs?: number;
  maxRunMs?: number;
  /** RETENTION_REST_RATIO. */
  restRatio?: number;
  batches?: Partial<RetentionBatches>;
  /** Uploads became due: the photo sweeper's `soon()`, so that the objects go within a second. */
  onPhotosReleased?: () => void;
  /** Told of every run this instance did (tests count them). */
  onRun?: (result: RetentionResult) => void;
}

interface ClaimRow {
  last_result: Partial<RetentionResult> | null;
}

interface MessageStepRow {
  removed: number;
  unread: string | number;
  photos: number;
  last_id: string | number;
  done: boolean;
}

interface EventStepRow {
  removed: number;
  bound: string | number | null;
  last_id: string | number;
  done: boolean;
}

interface StreamStepRow {
  removed: number;
  last_user: string | number;
  done: boolean;
}

/**
 * MESSAGE_RETENTION_DAYS (CONTRACT §12): messages older than that are deleted, with their photos and every event of
 * that age, in small batches, each a short transaction of its own (drizzle/functions/lc_retention_*.sql), one at a
 * time with a rest after each: a send waits at most for one batch's locks, never for a run.
 *
 * One instance of many does each run: every instance asks every `pollMs` whether one is due, and takes it by moving
 * the job's `next_run_at` forward in a conditional UPDATE (scheduled_jobs), which exactly one of them wins. The cutoff
 * is computed here, from `now`, and passed to SQL.
 */
export function createRetention({
  db,
  log,
  days,
  now = Date.now,
  intervalMs = RETENTION_INTERVAL_MS,
  pollMs = Math.min(RETENTION_POLL_MS, intervalMs),
  // Within half an interval: a run ends well before the next is due, so two never overlap.
  maxRunMs = Math.min(RETENTION_MAX_RUN_MS, intervalMs / 2),
  restRatio = RETENTION_REST_RATIO,
  batches: batchOverrides,
  onPhotosReleased,
  onRun,
}: RetentionOptions) {
  const batches = { ...defaultRetentionBatches, ...batchOverrides };
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<RetentionResult | undefined> | undefined;
  let stopped = false;

  /** The run, when it is due and this instance is the one that moved `next_run_at`; with the last run's result. */
  async function claim(): Promise<ClaimRow | undefined> {
    const interval = sql`make_interval(secs => ${intervalMs / 1_000})`;
    // The row is made by the first instance that asks (the INSERT: its ON CONFLICT is for two asking at once).
    const [row] = rowsOf<ClaimRow>(
      await db.execute(sql`
        WITH claimed AS (
          UPDATE scheduled_jobs j SET next_run_at = now() + ${interval}, last_started_at = now()
          WHERE j.name = ${RETENTION_JOB} AND j.next_run_at <= now()
          RETURNING j.last_result
        ), created AS (
          INSERT INTO scheduled_jobs (name, next_run_at, last_started_at)
          SELECT ${RETENTION_JOB}::text, now() + ${interval}, now()
          WHERE NOT EXISTS (SELECT FROM scheduled_jobs j WHERE j.name = ${RETENTION_JOB})
          ON CONFLICT (name) DO NOTHING
          RETURNING last_result
        )
        SELECT last_result FROM claimed UNION ALL SELECT last_result FROM created`),
    );
    return row;
  }

  async function run(previous: Partial<RetentionResult> | null): Promise<RetentionResult> {
    const started = performance.now();
    const cutoff = new Date(now() - days * DAY_MS).toISOString();
    const result: RetentionResult = {
      cutoff,
      messages: 0,
      unread: 0,
      photos: 0,
      chat_events: 0,
      user_events: 0,
      webhook_deliveries: 0,
      events_bound: previous?.events_bound ?? 0,
      streams_after_user: previous?.streams_after_user ?? 0,
      complete: false,
      batches: { messages: 0, events: 0, streams: 0, webhooks: 0 },
      max_batch_ms: { messages: 0, events: 0, streams: 0, webhooks: 0 },
      ms: 0,
    };
    const timeLeft = () => !stopped && performance.now() - started < maxRunMs;
    async function step<Row>(kind: keyof RetentionResult["batches"], query: SQL): Promise<Row> {
      const at = performance.now();
      const [row] = rowsOf<Row>(await db.execute(query));
      const ms = performance.now() - at;
      result.batches[kind] += 1;
      result.max_batch_ms[kind] = Math.max(result.max_batch_ms[kind], Math.round(ms));
      if (restRatio > 0) await new Promise((resolve) => setTimeout(resolve, ms * restRatio));
      return row!;
    }
    try {
      // Messages first: their content is what the retention is for.
      let messagesDone = false;
      for (let after = 0; !messagesDone && timeLeft(); ) {
        const row = await step<MessageStepRow>(
          "messages",
          sql`select * from lc_retention_step(${cutoff}::timestamptz, ${after}, ${batches.messages})`,
        );
        result.messages += row.removed;
        result.unread += Number(row.unread);
        result.photos += row.photos;
        if (row.photos > 0) onPhotosReleased?.();
        after = Number(row.last_id);
        messagesDone = row.done;
      }
      let eventsDone = false;
      for (let after = 0; !eventsDone && timeLeft(); ) {
        const row = await step<EventStepRow>(
          "events",
          sql`select * from lc_retention_events_step(${cutoff}::timestamptz, ${after}, ${batches.events})`,
        );
        result.chat_events += row.removed;
        if (row.bound !== null) result.events_bound = Math.max(result.events_bound, Number(row.bound));
        after = Number(row.last_id);
        eventsDone = row.done;
      }
      // Every user's stream, from where the last run's pass stopped; a pass that ends starts over at the next run
      // (the bound has moved by then).
      let streamsDone = false;
      while (!streamsDone && result.events_bound > 0 && timeLeft()) {
        const row = await step<StreamStepRow>(
          "streams",
          sql`select * from lc_retention_streams_step(${result.events_bound}, ${result.streams_after_user},
                ${batches.streamUsers}, ${batches.streamRows})`,
        );
        result.user_events += row.removed;
        result.streams_after_user = row.done ? 0 : Number(row.last_user);
        streamsDone = row.done;
      }
      // The outbox's copies: a delivery recorded before the cutoff that was delivered or is dead goes too, whatever
      // WEBHOOK_KEEP_DELIVERED_S says (a dead one stays until an operator acts, otherwise); one still due stays.
      let webhooksDone = false;
      for (let after = 0; !webhooksDone && timeLeft(); ) {
        const row = await step<OutboxStepRow>("webhooks", removeOldDeliveries(cutoff, after, batches.webhooks));
        result.webhook_deliveries += row.removed;
        after = Number(row.last_id ?? after);
        webhooksDone = row.done;
      }
      result.complete = messagesDone && eventsDone && (streamsDone || result.events_bound === 0) && webhooksDone;
    } catch (error) {
      result.failed = true;
      log.warn({ err: error }, "a retention batch failed: what is left is removed by the next run");
    }
    result.ms = Math.round(performance.now() - started);
    return result;
  }

  /** The run, if it is due and this instance wins it (or the one under way here); undefined otherwise. */
  function runNow(): Promise<RetentionResult | undefined> {
    if (stopped) return Promise.resolve(undefined);
    running ??= (async () => {
      const claimed = await claim();
      if (!claimed) return undefined;
      const result = await run(claimed.last_result);
      // Recorded even when a batch failed: the bound and the streams' position carry the work done to the next run.
      await db.execute(sql`
        UPDATE scheduled_jobs SET last_finished_at = now(), last_result = ${JSON.stringify(result)}::jsonb
        WHERE name = ${RETENTION_JOB}`);
      log.info({ retention: result }, "retention run");
      onRun?.(result);
      return result;
    })().finally(() => {
      running = undefined;
    });
    return running;
  }

  const tick = () => {
    runNow().catch((error: unknown) => log.warn({ err: error }, "could not take or record a retention run"));
  };

  return {
    days,
    /** Asks every `pollMs` (first after one interval of polling: a restart does not run it at once). */
    start() {
      timer = setInterval(tick, pollMs);
      timer.unref();
    },
    runNow,
    /** Stops after the batch under way; the rest is left to the next run, on any instance. */
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running?.catch(() => {});
    },
  };
}

export type Retention = ReturnType<typeof createRetention>;

/** The job's last run as the deployment's database has it, for `/internal/chat/ws/stats`. */
export interface RetentionStatus {
  days: number;
  last_started_at: string | null;
  last_finished_at: string | null;
  last_result: RetentionResult | null;
}

/** The retention's last run, whichever instance did it (one key lookup; its fields null while none was recorded). */
export function readRetentionStatus(db: Database, days: number): () => Promise<RetentionStatus> {
  return async () => {
    const [row] = rowsOf<Omit<RetentionStatus, "days">>(
      await db.execute(sql`
        SELECT lc_iso(last_started_at) AS last_started_at, lc_iso(last_finished_at) AS last_finished_at, last_result
        FROM scheduled_jobs WHERE name = ${RETENTION_JOB}`),
    );
    return row ? { days, ...row } : { days, last_started_at: null, last_finished_at: null, last_result: null };
  };
}
