/**
 * Applying migrations to a database in use, watched: the real runner (runMigrations, on a pg.Client of its
 * own, as src/db/client.ts opens one) while a probe runs app-like traffic (traffic-probe.ts) and a monitor times
 * the migrating session's AccessExclusiveLocks (lock-monitor.ts). The folders that bring a database to an older
 * release with the same runner are migration-folders.ts's.
 */
import pg from "pg";
import { withPinnedIsolation } from "../../src/db/client.ts";
import { pgMigrationConnection, runMigrations } from "../../src/db/migrator.ts";
import { type LockHold, type LockWatch, watchAccessExclusiveLocks } from "./lock-monitor.ts";
import { type ProbeChat, type ProbeOptions, type ProbeSummary, startProbe } from "./traffic-probe.ts";

/** A session as src/db/client.ts opens the migrating one (and which test code may use the same way). */
export async function migrationClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: withPinnedIsolation(url), keepAlive: true });
  client.on("error", () => {});
  await client.connect();
  return client;
}

/** Brings the database of `url` to the files of `folder`, with the real runner on a session of its own. */
export async function migrate(url: string, folder: string) {
  const client = await migrationClient(url);
  try {
    return await runMigrations(pgMigrationConnection(client), folder);
  } finally {
    await client.end();
  }
}

export interface WatchedMigration {
  /** The files applied (versioned, then repeatable), each with its time. */
  files: Array<{ name: string; ms: number; attempts: number }>;
  /** Every AccessExclusiveLock the migrating session held, longest first. */
  locks: LockWatch;
  probe: ProbeSummary;
}

/** The AccessExclusiveLocks on relations other sessions could see, held longer than `ms`. */
export const visibleHoldsOver = (watched: WatchedMigration, ms: number): LockHold[] =>
  watched.locks.holds.filter((h) => h.visible && h.ms > ms);

/**
 * Applies `folder` to the database of `url` with the real runner, while `chats` get app-like traffic and the
 * runner's session is watched for AccessExclusiveLocks.
 */
export async function migrateWatched(
  url: string,
  folder: string,
  chats: ProbeChat[],
  options: ProbeOptions & { pollMs?: number } = {},
): Promise<WatchedMigration> {
  const migrating = await migrationClient(url);
  const monitor = new pg.Client({ connectionString: url });
  monitor.on("error", () => {});
  await monitor.connect();
  try {
    const pid = (await migrating.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
    const probe = await startProbe(url, chats, options);
    await probe.ready;
    const watch = watchAccessExclusiveLocks(monitor, pid, { intervalMs: options.pollMs });
    const outcome = await runMigrations(pgMigrationConnection(migrating), folder).then(
      (report) => ({ report }),
      (error: unknown) => ({ error }),
    );
    // Stopped whatever happened, the probe before the watch: what it saw until the migration's end counts.
    const probeSummary = await probe.stop();
    const locks = await watch.stop();
    if ("error" in outcome) throw outcome.error;
    // The runner reports its repeatable sources (functions/) apart, when it has them.
    const repeatable = (outcome.report as { repeatable?: WatchedMigration["files"] }).repeatable ?? [];
    return { files: [...outcome.report.applied, ...repeatable], locks, probe: probeSummary };
  } finally {
    await Promise.all([migrating.end().catch(() => {}), monitor.end().catch(() => {})]);
  }
}
