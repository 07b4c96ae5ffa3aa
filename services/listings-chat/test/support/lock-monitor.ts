/**
 * How long one session (a migration's) held each AccessExclusiveLock: a monitor connection reads pg_locks every
 * `intervalMs` and times, per relation, the stretch during which the lock was continuously granted to that
 * session (from the first poll that saw it to the last one, by the server's clock: a lower bound, short of the
 * truth by at most one interval, `maxGapMs` in the result).
 *
 * A lock on a relation that other sessions cannot see (created by the migration's transaction, not committed
 * yet: a new table, its index, its TOAST table) blocks nobody, since nobody can name it: such holds are kept
 * apart (`visible: false`), named once the migration has committed.
 */
import type pg from "pg";

export interface LockHold {
  /** The relation as `regclass` shows it: `chats`, `chat_events_0`; its oid when it is gone. */
  relation: string;
  /** Other sessions could see the relation (and so queue behind the lock) while it was held. */
  visible: boolean;
  /** First to last poll that saw it granted. */
  ms: number;
  /** What the session was running when the lock was first seen. */
  statement: string;
}

export interface LockWatch {
  holds: LockHold[];
  polls: number;
  /** The longest time between two polls: how much a hold may be longer than measured. */
  maxGapMs: number;
}

interface Poll {
  at: number;
  statement: string | null;
  locks: Array<{ oid: string; name: string | null }>;
}

interface Open {
  name: string | null;
  visible: boolean;
  firstAt: number;
  lastAt: number;
  statement: string;
}

/**
 * Watches the AccessExclusiveLocks granted to backend `pid` until `stop()`, which polls once more and returns
 * every hold, longest first. `monitor` must be a connection of its own, to the same database.
 */
export function watchAccessExclusiveLocks(
  monitor: pg.ClientBase,
  pid: number,
  { intervalMs = 20 }: { intervalMs?: number } = {},
): { stop(): Promise<LockWatch> } {
  const open = new Map<string, Open>();
  const closed: Array<Open & { oid: string }> = [];
  let polls = 0;
  let maxGapMs = 0;
  let previousAt: number | undefined;
  let stopping = false;

  const poll = async (): Promise<void> => {
    const { rows } = await monitor.query<Poll>(
      `select extract(epoch from clock_timestamp())::float8 * 1000 as at,
         (select query from pg_stat_activity where pid = $1) as statement,
         coalesce((select json_agg(json_build_object('oid', l.relation::text, 'name', c.oid::regclass::text))
                   from pg_locks l left join pg_class c on c.oid = l.relation
                   where l.pid = $1 and l.locktype = 'relation' and l.mode = 'AccessExclusiveLock' and l.granted),
                  '[]'::json) as locks`,
      [pid],
    );
    const { at, statement, locks } = rows[0]!;
    polls++;
    if (previousAt !== undefined) maxGapMs = Math.max(maxGapMs, at - previousAt);
    previousAt = at;
    const seen = new Set<string>();
    for (const lock of locks) {
      seen.add(lock.oid);
      const held = open.get(lock.oid);
      if (held) {
        held.lastAt = at;
        held.name ??= lock.name;
      } else {
        open.set(lock.oid, {
          name: lock.name,
          visible: lock.name !== null,
          firstAt: at,
          lastAt: at,
          statement: (statement ?? "").replace(/\s+/g, " ").slice(0, 160),
        });
      }
    }
    for (const [oid, held] of open) {
      if (seen.has(oid)) continue;
      open.delete(oid);
      closed.push({ oid, ...held });
    }
  };

  // A failed poll ends the watch; `stop()` throws its error (held until then, not an unhandled rejection).
  let failure: unknown;
  const loop = (async () => {
    while (!stopping) {
      await poll();
      // pg_locks has nothing to wait on: it is sampled.
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })().catch((error: unknown) => {
    failure = error;
  });

  return {
    async stop() {
      stopping = true;
      await loop;
      if (failure) throw failure;
      await poll();
      for (const [oid, held] of open) closed.push({ oid, ...held });
      // Relations the migration made are named now that it has committed (or by oid, if they are gone again).
      const unnamed = closed.filter((h) => h.name === null).map((h) => h.oid);
      const names = new Map(
        (
          await monitor.query<{ oid: string; name: string }>(
            "select oid::text, oid::regclass::text as name from pg_class where oid = any($1::oid[])",
            [unnamed],
          )
        ).rows.map((r) => [r.oid, r.name]),
      );
      const holds = closed
        .map((h) => ({
          relation: h.name ?? names.get(h.oid) ?? `oid ${h.oid}`,
          visible: h.visible,
          ms: Math.round(h.lastAt - h.firstAt),
          statement: h.statement,
        }))
        .sort((a, b) => b.ms - a.ms);
      return { holds, polls, maxGapMs: Math.round(maxGapMs) };
    },
  };
}
