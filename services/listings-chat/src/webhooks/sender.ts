/**
 * Delivers the queued webhooks of `webhook_deliveries` (CONTRACT §9) from this instance: claims due rows in
 * batches (leased: outbox.ts), POSTs each signed per Standard Webhooks, at most `concurrency` at a time, and
 * writes the results back in batches. Memory is bounded whatever the receiver does: at most twice `concurrency`
 * claimed rows are held, and claiming stops while results wait to be written.
 *
 * A receiver that fails `BREAKER_FAILURES` times in a row opens the breaker: queued claims go back to the table
 * untried, and one due delivery at a time probes the receiver, after waits that grow like a retry's (capped at
 * a minute), until one gets a 2xx; then the backlog goes out at full speed. While the receiver is down the
 * instance does no more than that (the write path never notices), and deliveries past WEBHOOK_MAX_AGE_S die
 * without an attempt (`expireWhileOpen`).
 */
import type { Logger } from "pino";
import { Pool } from "undici";
import type { Database } from "../db/client.ts";
import { sqlStateOf } from "../db/retry.ts";
import type { WebhookMetrics } from "./metrics.ts";
import { retryDelayMs, splitCredentials, type WebhookOptions } from "./options.ts";
import {
  type AttemptResult,
  type ClaimedDelivery,
  claimDue,
  expireOverdue,
  releaseClaims,
  settleAttempts,
  webhookIdOf,
} from "./outbox.ts";
import { createSigner } from "./signature.ts";
import type { YieldPolicy } from "./yielding.ts";

/** Failures in a row (no 2xx between) that open the breaker. */
export const BREAKER_FAILURES = 5;
/** The longest wait between two probes of a failing receiver. */
export const BREAKER_PROBE_MAX_MS = 60_000;
/** Results written per statement. */
const SETTLE_BATCH = 500;
/**
 * Results gather this long before they are written (unless many are waiting): a statement per few results, not
 * per result. Each round trip to PostgreSQL costs the instance a socket write and the server a transaction;
 * written at once, a busy instance settled one or two results per statement.
 */
const SETTLE_GATHER_MS = 20;
/** Claimed rows held, as a multiple of the concurrency: a claim asks for at least twice the concurrency. */
const CLAIM_AHEAD = 4;
/** While yielding, how often the sender looks again whether the CPU came free (its pressure is sampled as often). */
const YIELD_RECHECK_MS = 250;
/** The longest `last_error` kept (a receiver's error page is cut). */
const ERROR_MAX_CHARS = 300;
/** Of a failed answer's body, what `last_error` quotes. */
const ERROR_BODY_BYTES = 200;
/** How long a stopping instance waits for its deliveries in flight before it abandons them (they are leased). */
const STOP_GRACE_MS = 2_000;
/** How long a stopping instance waits for the database (claims given back, results written): then it leaves them to the leases. */
const STOP_DATABASE_MS = 1_000;

/** How long a claim is held: the attempt's time-out, and room for writing its result back. */
export const leaseMsFor = (timeoutMs: number) => 2 * timeoutMs + 10_000;

export interface WebhookSenderDeps {
  db: Database;
  options: WebhookOptions;
  log: Logger;
  metrics: WebhookMetrics;
  /** When to send only the reminders and leave the rest for later (yielding.ts); never, without one. */
  yieldPolicy?: YieldPolicy;
}

export type WebhookSender = ReturnType<typeof createWebhookSender>;

export function createWebhookSender({ db, options, log, metrics, yieldPolicy }: WebhookSenderDeps) {
  const sign = createSigner(options.secret);
  // undici does not send a URL's user:password: they go as Basic authorization, and the URL without them.
  const { url, authorization } = splitCredentials(options.url);
  const target = new URL(url);
  const path = `${target.pathname}${target.search}`;
  const leaseMs = leaseMsFor(options.timeoutMs);
  // One pool of keep-alive connections to the receiver, its time-outs the attempt's: no timer or signal per
  // request (an AbortSignal.timeout each cost 30 µs of the 50 µs a delivery took; a Pool asked directly, 16).
  const pool = new Pool(target.origin, {
    connections: options.concurrency,
    connect: { timeout: options.timeoutMs },
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
    keepAliveTimeout: 4_000,
  });
  let stopping = false;

  const queue: ClaimedDelivery[] = [];
  const results: AttemptResult[] = [];
  /** Attempts cut by stop(): not failures (the receiver was not at fault), given back as never tried. */
  const abandoned: ClaimedDelivery[] = [];
  let inFlight = 0;
  let stopped = false;
  let loop: Promise<void> | undefined;
  let settling: Promise<void> | undefined;
  let settleTimer: NodeJS.Timeout | undefined;
  /** Claims pause until then after a claim found fewer rows than asked (nothing more is due); wake() clears it. */
  let nextClaimAt = 0;
  /** Bumped by wake(): a claim under way when it came must not push the next one back. */
  let wakes = 0;
  let failuresInARow = 0;
  /** Open breaker: when the next probe may go; its count sets the wait after it. */
  let breaker: { probeAt: number; probes: number; lastError: string } | undefined;
  let lastDatabaseWarning = 0;
  let wasYielding = false;

  /** Resolves the loop's current wait: a slot freed, a result came, wake(), stop(). */
  let poke: (() => void) | undefined;
  const nudge = () => {
    poke?.();
    poke = undefined;
  };
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        poke = undefined;
        resolve();
      }, ms);
      poke = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  function warnDatabase(error: unknown, what: string) {
    // Once per 10 s, not once per batch, while the database is away.
    if (Date.now() - lastDatabaseWarning < 10_000) return;
    lastDatabaseWarning = Date.now();
    log.warn({ err: error }, `webhooks: could not ${what}; retried in a second (nothing is lost: the rows wait)`);
  }

  async function attempt(claim: ClaimedDelivery): Promise<AttemptResult> {
    const webhookId = webhookIdOf(claim.id);
    const timestampS = Math.floor(Date.now() / 1000);
    try {
      const answer = await pool.request({
        path,
        method: "POST",
        headers: {
          "content-type": "application/json",
          "user-agent": "listings-chat-webhooks",
          "webhook-id": webhookId,
          "webhook-timestamp": String(timestampS),
          "webhook-signature": sign(webhookId, timestampS, claim.body),
          ...(authorization ? { authorization } : {}),
        },
        body: claim.body,
      });
      if (answer.statusCode >= 200 && answer.statusCode < 300) {
        // Delivered by its status; what the body says does not matter, and it must not hold the connection.
        answer.body.dump().catch(() => {});
        return { id: claim.id, attempts: claim.attempts, delivered: true };
      }
      const quoted = await firstBytesOf(answer.body, ERROR_BODY_BYTES);
      return failure(claim, `HTTP ${answer.statusCode}${quoted ? `: ${quoted}` : ""}`);
    } catch (error) {
      return failure(claim, describeFailure(error, options.timeoutMs, stopping));
    }
  }

  function failure(claim: ClaimedDelivery, error: string): AttemptResult {
    return {
      id: claim.id,
      attempts: claim.attempts,
      delivered: false,
      // Control characters say nothing to an operator, and PostgreSQL text holds no NUL (an error page may).
      error: error
        .replace(/\p{Cc}+/gu, " ")
        .trim()
        .slice(0, ERROR_MAX_CHARS),
      retryInMs: retryDelayMs(claim.attempts, options.retryMinMs, options.retryMaxMs),
    };
  }

  function dispatch(claim: ClaimedDelivery) {
    inFlight += 1;
    void attempt(claim).then((result) => {
      inFlight -= 1;
      if (!result.delivered && stopping) {
        abandoned.push(claim);
        return;
      }
      results.push(result);
      if (result.delivered) {
        metrics.delivered((Date.now() - claim.recordedAt) / 1000);
        failuresInARow = 0;
        if (breaker) {
          log.info({ probes: breaker.probes }, "webhooks: the receiver answers again; sending the backlog");
          breaker = undefined;
        }
      } else {
        metrics.failed();
        failuresInARow += 1;
        if (breaker) {
          breaker.probeAt = Date.now() + retryDelayMs(breaker.probes, options.retryMinMs, probeMaxMs());
          breaker.lastError = result.error;
        } else if (failuresInARow >= BREAKER_FAILURES && !stopped) {
          openBreaker(result.error);
        }
      }
      settle();
      // The next queued claim takes the slot at once, not when the loop comes round (it may be in a claim).
      if (!stopped && !breaker && queue.length > 0 && inFlight < options.concurrency) {
        dispatch(queue.shift() as ClaimedDelivery);
      }
      nudge();
    });
  }

  const probeMaxMs = () => Math.min(options.retryMaxMs, BREAKER_PROBE_MAX_MS);

  function openBreaker(lastError: string) {
    breaker = { probeAt: Date.now() + retryDelayMs(1, options.retryMinMs, probeMaxMs()), probes: 0, lastError };
    log.warn(
      { failures: failuresInARow, last_error: lastError },
      "webhooks: the receiver keeps failing; sending stops, and one delivery probes it until it answers",
    );
    const untried = queue.splice(0);
    releaseClaims(db, untried).catch((error: unknown) =>
      warnDatabase(error, "release claims (they are due again when their lease ends)"),
    );
  }

  /** Writes the results gathered so far soon: at once when many wait (or on stop), else after SETTLE_GATHER_MS. */
  function settle() {
    if (settling || settleTimer) return;
    if (stopped || results.length >= 2 * options.concurrency) {
      settleNow();
      return;
    }
    settleTimer = setTimeout(() => {
      settleTimer = undefined;
      settleNow();
    }, SETTLE_GATHER_MS);
  }

  /** Writes the results gathered so far, in batches, one statement at a time. */
  function settleNow() {
    if (settleTimer) {
      clearTimeout(settleTimer);
      settleTimer = undefined;
    }
    settling ??= (async () => {
      while (results.length > 0) {
        const batch = results.splice(0, SETTLE_BATCH);
        try {
          metrics.dead((await settleAttempts(db, batch, options.maxAgeS)).length);
        } catch (error) {
          // Data the database refuses (class 22) would be refused again: dropped, the rows' leases end and they
          // are tried again. Anything else (the database away) is kept and written later.
          if (sqlStateOf(error)?.startsWith("22")) {
            log.error(
              { err: error, deliveries: batch.length },
              "webhooks: results refused by the database; retried after the lease",
            );
            continue;
          }
          warnDatabase(error, "write delivery results");
          results.unshift(...batch);
          if (stopped) return;
          await new Promise((resolve) => setTimeout(resolve, 1_000));
        }
      }
    })().finally(() => {
      settling = undefined;
      // Results that came while this one was written wait their turn.
      if (results.length > 0) settle();
      nudge();
    });
  }

  /** Due rows claimed; undefined when the database failed (not "nothing due": the queue may be long). */
  async function claim(limit: number, remindersOnly = false): Promise<ClaimedDelivery[] | undefined> {
    try {
      return await claimDue(db, limit, leaseMs, remindersOnly);
    } catch (error) {
      warnDatabase(error, "claim due deliveries");
      if (!stopped) await pause(1_000);
      return undefined;
    }
  }

  function reportYielding(yielding: boolean) {
    if (yielding === wasYielding) return;
    wasYielding = yielding;
    metrics.yielding(yielding);
    log.debug({ yielding }, yielding ? "webhooks: the CPU is short; only reminders go" : "webhooks: sending all");
  }

  async function run() {
    const cap = options.concurrency;
    while (!stopped) {
      if (breaker) {
        // Probing is not yielding: the receiver, not the CPU, holds the deliveries back.
        reportYielding(false);
        const wait = breaker.probeAt - Date.now();
        if (wait > 0 || inFlight > 0) {
          await pause(Math.max(wait, 0) || options.pollMs);
          continue;
        }
        const [probe] = (await claim(1)) ?? [];
        if (stopped) {
          if (probe) await releaseClaims(db, [probe]).catch(() => {});
          break;
        }
        if (probe) {
          breaker.probes += 1;
          // Until this probe's result: another is not sent.
          breaker.probeAt = Date.now() + leaseMs;
          dispatch(probe);
        } else {
          breaker.probeAt = Date.now() + options.pollMs;
        }
        continue;
      }
      // Claimed rows are held up to CLAIM_AHEAD times the concurrency, claimed in batches of at least twice it;
      // none while results wait to be written.
      const room = CLAIM_AHEAD * cap - inFlight - queue.length;
      let asked = 0;
      let got = 0;
      let woken = false;
      if (Date.now() >= nextClaimAt && room >= 2 * cap && results.length < 8 * cap) {
        // Asked at each claim: the CPU may have come free (or run short) since the last.
        const yielding = yieldPolicy?.shouldYield() ?? false;
        reportYielding(yielding);
        asked = room;
        const wakesBefore = wakes;
        const claimed = await claim(room, yielding);
        got = claimed?.length ?? 0;
        if (stopped || breaker) {
          await releaseClaims(db, claimed ?? []).catch(() => {});
          continue;
        }
        queue.push(...(claimed ?? []));
        // Dry only if the claim answered, and for every row, not the reminders alone.
        if (claimed && got < asked && !yielding) yieldPolicy?.drained();
        woken = wakes !== wakesBefore;
        const more = got === asked || woken;
        nextClaimAt = more ? 0 : Date.now() + (yielding ? Math.min(YIELD_RECHECK_MS, options.pollMs) : options.pollMs);
      }
      while (queue.length > 0 && inFlight < cap) dispatch(queue.shift() as ClaimedDelivery);
      // More may be due, or wake() came during the claim (its nudge found no wait to end): claim again at once.
      if (asked > 0 && (got === asked || woken)) continue;
      // Nothing more due (or no room): until a slot frees, a result comes, wake(), or the next poll.
      await pause(Math.max(nextClaimAt - Date.now(), 0) || options.pollMs);
    }
  }

  return {
    start() {
      loop ??= run().catch((error: unknown) => log.error({ err: error }, "webhooks: the sender stopped"));
    },
    /** Deliveries were recorded here (reminders): look now rather than at the next poll. */
    wake() {
      wakes += 1;
      nextClaimAt = 0;
      nudge();
    },
    /** Whether the receiver is failing and only probed (tests and stats). */
    isProbing: () => breaker !== undefined,
    /** Dead without an attempt, the due deliveries past WEBHOOK_MAX_AGE_S, while the breaker holds them back. */
    async expireWhileOpen(): Promise<number> {
      if (!breaker) return 0;
      const expired = await expireOverdue(
        db,
        options.maxAgeS,
        1_000,
        `expired: WEBHOOK_MAX_AGE_S passed while the receiver was failing (${breaker.lastError})`.slice(
          0,
          ERROR_MAX_CHARS,
        ),
      );
      metrics.dead(expired);
      return expired;
    },
    /**
     * Stops claiming, gives back the claims not tried, waits a moment for the deliveries in flight (then cuts
     * them: their rows are leased and go out again later, from any instance) and writes what came back.
     */
    async stop() {
      stopped = true;
      nudge();
      const deadline = Date.now() + Math.min(STOP_GRACE_MS, options.timeoutMs);
      // The loop may be in a claim on a database that hangs: it is not waited for past the grace.
      await Promise.race([loop, pause(Math.max(deadline - Date.now(), 0))]);
      while (inFlight > 0 && Date.now() < deadline) await pause(50);
      // Cut: each attempt still in flight fails at once, and goes back untried (dispatch).
      stopping = true;
      const closed = pool.destroy().catch(() => {});
      while (inFlight > 0) await pause(10);
      // Given back (due again now) and written, as far as the database answers within a second; what it does
      // not take is safe anyway: those rows are leased, and due again when the lease ends.
      settleNow();
      const untried = [...queue.splice(0), ...abandoned.splice(0)];
      await Promise.race([
        Promise.all([releaseClaims(db, untried).catch(() => {}), settling]),
        new Promise((resolve) => setTimeout(resolve, STOP_DATABASE_MS).unref()),
      ]);
      await closed;
    },
  };
}

/** At most `limit` bytes of a body as text, the rest discarded (a receiver's error page can be big). */
async function firstBytesOf(body: AsyncIterable<Buffer> & { destroy(): unknown }, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= limit) break;
    }
  } catch {
    // The body broke off: what came is quoted.
  } finally {
    body.destroy();
  }
  return Buffer.concat(chunks).subarray(0, limit).toString("utf8").replace(/\s+/g, " ").trim();
}

/** A failed attempt in words an operator reads in the dead list. */
export function describeFailure(error: unknown, timeoutMs: number, stopping: boolean): string {
  const err = error as { name?: string; code?: string; message?: string; cause?: { code?: string; message?: string } };
  if (stopping) return "abandoned: the instance stopped before the receiver answered";
  if (err.name === "TimeoutError" || err.code === "UND_ERR_HEADERS_TIMEOUT" || err.code === "UND_ERR_BODY_TIMEOUT") {
    return `timeout: no answer within ${timeoutMs} ms`;
  }
  if (err.code === "UND_ERR_CONNECT_TIMEOUT") return `timeout: no connection within ${timeoutMs} ms`;
  const code = err.cause?.code ?? err.code;
  if (code === "ECONNREFUSED") return "connection refused (ECONNREFUSED): is the receiver running?";
  if (code === "UND_ERR_SOCKET" || code === "ECONNRESET") return `the receiver closed the connection (${code})`;
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return `the receiver's host is not found (${code})`;
  return `${code ?? err.name ?? "error"}: ${err.cause?.message ?? err.message ?? String(error)}`;
}
