/**
 * Which releases are still serving, so that a contract migration (one that drops what an older release uses)
 * waits until none of them is. Each chat instance on PostgreSQL keeps a row in `lc_migrations.instances`: its
 * id, the newest versioned migration it was built with and how many there are, refreshed every 30 s and
 * deleted at a clean stop. The runner holds back a contract file while an instance seen in the last 90 s
 * knows fewer files than that file's position (migrator.ts); a crashed instance's row stops counting 90 s
 * after its last refresh.
 *
 * PGlite has one process, so no instance of an older release can be running beside this one: nothing registers.
 */
import { sql } from "drizzle-orm";
import type { DatabaseHandle } from "./client.ts";
import type { MigrationConnection } from "./migrator.ts";

export const INSTANCES_TABLE = "lc_migrations.instances";

/** How often an instance says it is alive. */
export const INSTANCE_REFRESH_MS = 30_000;

/** An instance not seen for this long is gone (three refreshes missed: a crash, a partition, SIGKILL). */
export const INSTANCE_LIVE_WINDOW_MS = 90_000;

/** Created by the runner, before any instance registers; `if not exists`, so safe on every start. */
export const instancesTableDdl = `create table if not exists ${INSTANCES_TABLE} (
  instance_id text primary key,
  newest_migration text not null,
  migrations integer not null,
  started_at timestamptz not null default now(),
  seen_at timestamptz not null default now()
)`;

/**
 * Rows of instances not seen for a day: crashed or killed ones, whose ids (host and pid) never come back.
 * They stopped counting after the window already; this only keeps the table small.
 */
export async function forgetLongGoneInstances(connection: MigrationConnection): Promise<void> {
  await connection.run(`delete from ${INSTANCES_TABLE} where seen_at < now() - interval '1 day'`);
}

/** An instance seen lately that was built with fewer versioned migrations than a contract file's position. */
export interface OlderInstance {
  instanceId: string;
  newestMigration: string;
  migrations: number;
  secondsAgo: number;
}

/** The live instances built with fewer than `position` versioned files (the 1-based position of a contract file). */
export async function liveInstancesBehind(
  connection: MigrationConnection,
  position: number,
  windowMs: number,
): Promise<OlderInstance[]> {
  const rows = await connection.rows<{
    instance_id: string;
    newest_migration: string;
    migrations: number;
    seconds_ago: number;
  }>(
    `select instance_id, newest_migration, migrations, extract(epoch from now() - seen_at)::int as seconds_ago
      from ${INSTANCES_TABLE}
      where migrations < $1 and seen_at > now() - make_interval(secs => $2::double precision / 1000)
      order by instance_id`,
    [position, windowMs],
  );
  return rows.map((r) => ({
    instanceId: r.instance_id,
    newestMigration: r.newest_migration,
    migrations: r.migrations,
    secondsAgo: r.seconds_ago,
  }));
}

/** This instance's release is older than the database: a contract migration it does not know has been applied. */
export class OlderThanDatabaseError extends Error {
  override name = "OlderThanDatabaseError";
}

export interface InstanceRegistration {
  /** Stops the refreshes and deletes the row (a clean stop: the next run need not wait for the window). */
  stop(): Promise<void>;
}

export interface InstanceRegistrationOptions {
  instanceId: string;
  /** The versioned migrations this release was built with, in order (MigrationReport.known). */
  known: string[];
  refreshMs?: number;
  /** A refresh that failed (the next one tries again; the row stays live for the window meanwhile). */
  onRefreshError?: (error: unknown) => void;
  /** Told when the row could not be deleted at stop (it stops counting once the live window has passed). */
  onRemoveError?: (error: unknown) => void;
}

/**
 * Registers this instance and keeps its row fresh until `stop()`. Fails when a contract migration this release
 * does not know is already applied: checked after the row is written, so that a runner deciding on a contract
 * file at the same moment either sees this row or has committed its file before the check (the runner locks
 * the table while it decides).
 */
export async function registerInstance(
  database: DatabaseHandle,
  options: InstanceRegistrationOptions,
): Promise<InstanceRegistration> {
  if (database.kind === "pglite") return { stop: async () => {} };
  const { instanceId, known } = options;
  const newest = known.at(-1) ?? "";
  const upsert = () =>
    database.db.execute(sql`insert into lc_migrations.instances (instance_id, newest_migration, migrations)
      values (${instanceId}, ${newest}, ${known.length})
      on conflict (instance_id) do update
        set newest_migration = excluded.newest_migration, migrations = excluded.migrations, seen_at = now()`);
  const remove = () => database.db.execute(sql`delete from lc_migrations.instances where instance_id = ${instanceId}`);

  await upsert();
  // sql.param: one text[] parameter (drizzle would spread a bare array into a list of parameters).
  const checked = await database.db.execute(sql`select name from lc_migrations.schema_migrations
    where kind = 'versioned' and contract and not (name = any(${sql.param(known)}::text[])) order by name`);
  const unknownContracts = (checked as unknown as { rows: Array<{ name: string }> }).rows;
  if (unknownContracts.length > 0) {
    await remove().catch(() => {});
    throw new OlderThanDatabaseError(
      `this release is older than the database: contract migration ${unknownContracts.map((r) => `${r.name}.sql`).join(", ")} ` +
        `was applied, and it drops what this release (newest migration ${newest}) may use. Deploy the release that ` +
        "has it, or a newer one",
    );
  }

  let refreshing: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    refreshing = upsert().catch((error: unknown) => options.onRefreshError?.(error));
  }, options.refreshMs ?? INSTANCE_REFRESH_MS);
  // The refresh alone must not keep a stopping process alive.
  timer.unref();
  let stopped: Promise<void> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        clearInterval(timer);
        await refreshing;
        await remove().catch((error: unknown) => (options.onRemoveError ?? options.onRefreshError)?.(error));
      })();
      return stopped;
    },
  };
}
