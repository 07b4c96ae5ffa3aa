/**
 * The webhook alerts of infra/k8s/base/prometheus-rule.yaml, run by promtool (Debian's `prometheus` package;
 * `.ci/run` installs it): `promtool check rules` on the rule groups as rendered, and `promtool test rules` on
 * series of a failing and of a healthy receiver, so that each alert is proven to fire, and to stay quiet, at
 * the times it should. Shared by infra/test/k8s.test.ts (every rendering) and its own mutation checks.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";

export interface RuleGroup {
  name: string;
  rules: Array<{ alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string> }>;
  [k: string]: unknown;
}

/** Whether promtool can run here; in CI (CI set) its absence is a failure, not a skip. */
export function promtoolAvailable(): boolean {
  const probe = spawnSync("promtool", ["--version"], { encoding: "utf8" });
  if (!probe.error && probe.status === 0) return true;
  if (process.env.CI) throw new Error("promtool is not installed (apt-get install prometheus): CI must run it");
  return false;
}

/** One pod's and another's copy of a gauge: the values come from the database, so every pod reports the same. */
const bothPods = (name: string, values: string) =>
  ["listings-chat-7c9f-a", "listings-chat-7c9f-b"].map((pod) => ({ series: `${name}{pod="${pod}"}`, values }));

const growing = { alertname: "ListingsChatWebhookBacklogGrowing" };
const dead = { alertname: "ListingsChatWebhooksDead" };

/**
 * promtool's unit tests, one scrape a minute. Each case is a receiver's story; `exp_alerts: []` is the quiet
 * half, checked as strictly as the firing half (the mutation checks in k8s.test.ts show both can fail).
 */
export const ALERT_TESTS = [
  {
    // The receiver goes down at 0: the oldest pending delivery ages a minute a minute. Over 300 s from 6 min
    // on, for 10 min: firing at 16 min, not at 15.
    name: "receiver down",
    interval: "1m",
    input_series: [
      ...bothPods("listings_chat_webhooks_oldest_pending_seconds", "0+60x40"),
      ...bothPods("listings_chat_webhooks_pending", "0+30x40"),
      ...bothPods("listings_chat_webhooks_dead", "0x40"),
    ],
    alert_rule_test: [
      { eval_time: "15m", ...growing, exp_alerts: [] },
      { eval_time: "16m", ...growing, exp_alerts: [{ exp_labels: { severity: "warning", cause: "oldest" } }] },
      { eval_time: "40m", ...dead, exp_alerts: [] },
    ],
  },
  {
    // A healthy receiver: a few deliveries in flight at any scrape, the oldest seconds old. Nothing fires.
    name: "healthy receiver",
    interval: "1m",
    input_series: [
      ...bothPods("listings_chat_webhooks_oldest_pending_seconds", "0 2 0 1 0 3 0 0 1 0 2 0 1 0 0 2 0 1 0 3 0 0x40"),
      ...bothPods("listings_chat_webhooks_pending", "0 4 0 2 0 6 0 0 3 0 5 0 2 0 0 4 0 2 0 7 0 0x40"),
      ...bothPods("listings_chat_webhooks_dead", "0x60"),
    ],
    alert_rule_test: [
      { eval_time: "30m", ...growing, exp_alerts: [] },
      { eval_time: "60m", ...growing, exp_alerts: [] },
      { eval_time: "60m", ...dead, exp_alerts: [] },
    ],
  },
  {
    // A slow receiver: it takes every delivery within a minute (the oldest stays young), but fewer than come,
    // so the backlog grows by 20 a minute and never empties. The 15-minute window holds no zero from 16 min
    // on; for 15 min: firing at 31 min, not at 30; the oldest-delivery alert never.
    name: "slow receiver",
    interval: "1m",
    input_series: [
      ...bothPods("listings_chat_webhooks_oldest_pending_seconds", "40x60"),
      ...bothPods("listings_chat_webhooks_pending", "0+20x60"),
      ...bothPods("listings_chat_webhooks_dead", "0x60"),
    ],
    alert_rule_test: [
      { eval_time: "30m", ...growing, exp_alerts: [] },
      { eval_time: "31m", ...growing, exp_alerts: [{ exp_labels: { severity: "warning", cause: "growing" } }] },
    ],
  },
  {
    // Bursts: the backlog climbs for ten minutes and then drains to nothing, again and again. It grows most of
    // the time, but it empties: no alert.
    name: "bursty but draining",
    interval: "1m",
    input_series: [
      ...bothPods("listings_chat_webhooks_oldest_pending_seconds", "0+20x9 0+20x9 0+20x9 0+20x9 0+20x9 0+20x9"),
      ...bothPods("listings_chat_webhooks_pending", "0+50x9 0+50x9 0+50x9 0+50x9 0+50x9 0+50x9"),
    ],
    alert_rule_test: [
      { eval_time: "35m", ...growing, exp_alerts: [] },
      { eval_time: "59m", ...growing, exp_alerts: [] },
    ],
  },
  {
    // Three deliveries die at 11 min and stay dead: firing from 16 min, not at 15.
    name: "dead deliveries",
    interval: "1m",
    input_series: [...bothPods("listings_chat_webhooks_dead", "0x10 3x20")],
    alert_rule_test: [
      { eval_time: "15m", ...dead, exp_alerts: [] },
      { eval_time: "16m", ...dead, exp_alerts: [{ exp_labels: { severity: "warning" } }] },
    ],
  },
  {
    // Two die at 5 min and are sent again (POST /internal/chat/webhooks/dead/retry) three minutes later.
    name: "dead, then retried in time",
    interval: "1m",
    input_series: [...bothPods("listings_chat_webhooks_dead", "0x4 2x3 0x30")],
    alert_rule_test: [
      { eval_time: "8m", ...dead, exp_alerts: [] },
      { eval_time: "30m", ...dead, exp_alerts: [] },
    ],
  },
];

export interface PromtoolResult {
  status: number | null;
  output: string;
}

/**
 * `promtool check rules` on `groups`, and `promtool test rules` with ALERT_TESTS against them. The unit tests
 * compare labels only: annotations are dropped from their copy of the rules (check rules reads them, with
 * their templates, from the full copy).
 */
export function runPromtool(groups: RuleGroup[]): { check: PromtoolResult; test: PromtoolResult } {
  const dir = mkdtempSync(join(tmpdir(), "lc-promtool-"));
  try {
    writeFileSync(join(dir, "rules.yaml"), stringify({ groups }));
    const bare = groups.map((g) => ({ ...g, rules: g.rules.map(({ annotations: _, ...rule }: any) => rule) }));
    writeFileSync(join(dir, "bare-rules.yaml"), stringify({ groups: bare }));
    writeFileSync(
      join(dir, "tests.yaml"),
      stringify({ rule_files: ["bare-rules.yaml"], evaluation_interval: "1m", tests: ALERT_TESTS }),
    );
    const run = (args: string[]): PromtoolResult => {
      const result = spawnSync("promtool", args, { cwd: dir, encoding: "utf8", timeout: 60_000 });
      if (result.error) throw result.error;
      return { status: result.status, output: `${result.stdout}${result.stderr}` };
    };
    return { check: run(["check", "rules", "rules.yaml"]), test: run(["test", "rules", "tests.yaml"]) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
