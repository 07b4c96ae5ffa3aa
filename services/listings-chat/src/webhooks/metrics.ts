import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { WebhookCounts } from "./outbox.ts";

/** What the sender reports as it goes (CONTRACT §9: deliveries by outcome, and their lag). */
export interface WebhookMetrics {
  /** A 2xx: `lagSeconds` from the change's record to the answer. */
  delivered(lagSeconds: number): void;
  /** An attempt that failed and will be retried (or die: `dead` says so once it is written). */
  failed(): void;
  dead(count: number): void;
  /** The sender began (true) or ceased (false) to leave all but reminders for later, the CPU being short. */
  yielding(on: boolean): void;
}

/** Lag buckets: a healthy receiver answers within a second; a backlog drains over minutes; retries take hours. */
const LAG_BUCKETS_SECONDS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14_400, 86_400];

/**
 * The webhook metrics of one instance, in its registry. The counters and the lag are this instance's; the
 * gauges are the whole deployment's queue (every instance reports the same: alert on max()), read from the
 * database through `counts` (cached there) when scraped.
 */
export function createWebhookMetrics(registry: Registry, counts: () => Promise<WebhookCounts>): WebhookMetrics {
  const deliveries = new Counter({
    name: "listings_chat_webhook_deliveries_total",
    help: "Webhook delivery attempts by outcome: delivered (a 2xx in time), failed (to be retried), dead (given up)",
    labelNames: ["outcome"],
    registers: [registry],
  });
  for (const outcome of ["delivered", "failed", "dead"]) deliveries.inc({ outcome }, 0);
  const lag = new Histogram({
    name: "listings_chat_webhook_delivery_lag_seconds",
    help: "From a change's record (its transaction) to the receiver's 2xx for its webhook",
    buckets: LAG_BUCKETS_SECONDS,
    registers: [registry],
  });
  const gauge = (name: string, help: string, pick: (c: WebhookCounts) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        // A database that does not answer leaves the last value: the scrape's other metrics still go out.
        const known = await counts().catch(() => undefined);
        if (known) this.set(pick(known));
      },
    });
  gauge(
    "listings_chat_webhooks_pending",
    "Webhook deliveries recorded and not yet delivered (all instances)",
    (c) => c.pending,
  );
  gauge(
    "listings_chat_webhooks_dead",
    "Webhook deliveries given up after WEBHOOK_MAX_AGE_S (all instances)",
    (c) => c.dead,
  );
  gauge(
    "listings_chat_webhooks_oldest_pending_seconds",
    "Age of the oldest webhook delivery not yet delivered (0 when none)",
    (c) => c.oldest_pending_s,
  );
  const yielding = new Gauge({
    name: "listings_chat_webhooks_yielding",
    help: "1 while this instance's webhook sender sends only unread reminders, the CPU being short (WEBHOOK_YIELD_MAX_S)",
    registers: [registry],
  });
  yielding.set(0);
  return {
    yielding(on) {
      yielding.set(on ? 1 : 0);
    },
    delivered(lagSeconds) {
      deliveries.inc({ outcome: "delivered" });
      lag.observe(Math.max(0, lagSeconds));
    },
    failed() {
      deliveries.inc({ outcome: "failed" });
    },
    dead(count) {
      if (count > 0) deliveries.inc({ outcome: "dead" }, count);
    },
  };
}
