/**
 * Webhooks on this instance (CONTRACT §9), when WEBHOOK_URL is set: the lease that keeps the write functions
 * recording, the sender, the unread reminders, and the upkeep of the table. Every part works on the shared
 * table, so any number of instances may run it; none keeps anything in memory that a crash would lose.
 */
import type { Logger } from "pino";
import type { Database } from "../db/client.ts";
import { watchCpuPressure } from "./cpu-pressure.ts";
import type { WebhookMetrics } from "./metrics.ts";
import type { WebhookOptions } from "./options.ts";
import { adoptSafetyEvents, recordDueReminders, removeDelivered, renewLease } from "./outbox.ts";
import { createWebhookSender } from "./sender.ts";
import { createYieldPolicy } from "./yielding.ts";

/** How often the lease is renewed (it is taken 10 minutes ahead, so a few missed renewals change nothing). */
export const LEASE_RENEW_MS = 30_000;
/** How often delivered rows past WEBHOOK_KEEP_DELIVERED_S are removed, and the upkeep below done. */
export const UPKEEP_MS = 60_000;
/** How often, while the receiver fails, the deliveries past WEBHOOK_MAX_AGE_S are given up. */
export const EXPIRY_MS = 5_000;
/** Reminders recorded per statement; a full batch is followed by another at once. */
const REMINDER_BATCH = 500;
/** Delivered rows removed per statement, and statements per upkeep: small batches, short locks. */
const REMOVE_BATCH = 1_000;
const REMOVE_BATCHES = 20;

export interface WebhooksDeps {
  db: Database;
  options: WebhookOptions;
  log: Logger;
  metrics: WebhookMetrics;
  /** A count that grows with the users' traffic: deliveries yield to it while the CPU is short (yielding.ts). */
  activity: () => number;
}

export type Webhooks = Awaited<ReturnType<typeof startWebhooks>>;

/**
 * Takes the lease first (from then on every write records its webhooks), then starts sending. A failure to
 * take the lease fails the start: an instance that would send while writes do not record is worse than none.
 */
export async function startWebhooks({ db, options, log, metrics, activity }: WebhooksDeps) {
  await renewLease(db);
  const pressure = options.yieldMaxS > 0 ? watchCpuPressure() : undefined;
  if (pressure && !pressure.source)
    log.warn("webhooks: no CPU pressure to read (Linux PSI); deliveries never yield to sends (WEBHOOK_YIELD_MAX_S)");
  else if (pressure)
    log.info({ source: pressure.source }, "webhooks: deliveries yield to users while the CPU is short");
  const yieldPolicy = pressure?.source ? createYieldPolicy({ pressure, activity, maxS: options.yieldMaxS }) : undefined;
  const sender = createWebhookSender({ db, options, log, metrics, yieldPolicy });
  const timers: NodeJS.Timeout[] = [];
  let stopped = false;
  const busy = new Set<Promise<unknown>>();

  /**
   * Runs `task` unless the previous run of it is still going; failures are logged (once per 10 s while they
   * last: the database may be away), and the next tick retries.
   */
  function every(ms: number, name: string, task: () => Promise<unknown>, now = false) {
    let running: Promise<unknown> | undefined;
    let lastWarning = 0;
    const tick = () => {
      if (stopped || running) return;
      running = task()
        .catch((error: unknown) => {
          if (Date.now() - lastWarning < 10_000) return;
          lastWarning = Date.now();
          log.warn({ err: error }, `webhooks: ${name} failed; tried again every ${ms} ms`);
        })
        .finally(() => {
          if (running) busy.delete(running);
          running = undefined;
        });
      busy.add(running);
    };
    const timer = setInterval(tick, ms);
    timer.unref();
    timers.push(timer);
    if (now) tick();
  }

  every(LEASE_RENEW_MS, "renewing the lease", () => renewLease(db));
  every(
    options.pollMs,
    "recording unread reminders",
    async () => {
      let recorded: number;
      do {
        recorded = await recordDueReminders(db, options.notifyUnreadAfterS, REMINDER_BATCH);
        if (recorded > 0) sender.wake();
      } while (recorded === REMINDER_BATCH && !stopped);
    },
    true,
  );
  every(
    UPKEEP_MS,
    "the upkeep of webhook_deliveries",
    async () => {
      while ((await adoptSafetyEvents(db, REMOVE_BATCH)) === REMOVE_BATCH && !stopped) {}
      const removed = await removeDelivered(db, options.keepDeliveredS, REMOVE_BATCH, REMOVE_BATCHES);
      if (removed > 0) log.debug({ removed }, "webhooks: delivered rows removed");
    },
    true,
  );
  every(EXPIRY_MS, "giving up expired deliveries", () => sender.expireWhileOpen());
  sender.start();

  return {
    wake: sender.wake,
    isProbing: sender.isProbing,
    async stop() {
      stopped = true;
      for (const timer of timers) clearInterval(timer);
      await sender.stop();
      pressure?.stop();
      await Promise.allSettled([...busy]);
    },
  };
}
