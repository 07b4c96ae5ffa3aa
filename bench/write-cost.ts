/**
 * What a stored message costs PostgreSQL beyond CPU (issue 23): WAL bytes (full-page images included) and
 * full-page images per message, read from the server's WAL position and pg_stat_wal over the measured
 * window; and, per table of the bench's own database, the row versions and index entries each message made,
 * from pg_stat_user_tables (a non-HOT update writes a new entry in every index of its table, a HOT one in
 * none) over the whole run. WAL is the server's, so another database busy at the same time counts too: run
 * it on a quiet server. Table statistics reach pg_stat_user_tables some time after the backends write, so
 * the end is read once the messages table's inserts match its rows.
 */
import pg from "pg";

interface TableCounts {
  inserts: number;
  updates: number;
  hotUpdates: number;
  indexes: number;
}

interface Snapshot {
  lsn: string;
  fullPageImages: number;
  messages: number;
  tables: Record<string, TableCounts>;
}

export interface WriteCost {
  /** Over the measured window: messages stored in it. */
  messages: number;
  walBytesPerMessage: number;
  fullPageImagesPerMessage: number;
  /** Over the whole run (set-up included): index entries written per stored message, every table. */
  indexEntriesPerMessage: number;
  /** Per table: row versions (inserts + updates) per message, and the share of updates that were HOT. */
  tables: Record<string, { rowVersionsPerMessage: number; hotShare: number | null }>;
}

async function snapshot(client: pg.Client): Promise<Snapshot> {
  const position = await client.query<{ lsn: string; fpi: string; messages: string }>(
    "select pg_current_wal_lsn()::text as lsn, (select wal_fpi from pg_stat_wal)::text as fpi, (select count(*) from messages)::text as messages",
  );
  const tables = await client.query<{
    name: string;
    inserts: string;
    updates: string;
    hot: string;
    indexes: string;
  }>(
    `select t.relname as name, t.n_tup_ins::text as inserts, t.n_tup_upd::text as updates, t.n_tup_hot_upd::text as hot,
       (select count(*) from pg_index i where i.indrelid = t.relid)::text as indexes
     from pg_stat_user_tables t`,
  );
  const row = position.rows[0]!;
  return {
    lsn: row.lsn,
    fullPageImages: Number(row.fpi),
    messages: Number(row.messages),
    tables: Object.fromEntries(
      tables.rows.map((t) => [
        t.name,
        {
          inserts: Number(t.inserts),
          updates: Number(t.updates),
          hotUpdates: Number(t.hot),
          indexes: Number(t.indexes),
        },
      ]),
    ),
  };
}

/** Starts measuring on the bench's database `url`: `window()` marks the measured window, `finish()` reads the cost. */
export async function measureWriteCost(url: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const atStart = await snapshot(client);
  let windowStart: Snapshot | undefined;
  let windowEnd: Snapshot | undefined;
  return {
    async windowStarts() {
      windowStart = await snapshot(client);
    },
    async windowEnds() {
      windowEnd = await snapshot(client);
    },
    async finish(): Promise<WriteCost> {
      try {
        if (!windowStart || !windowEnd) throw new Error("measureWriteCost: the window was not marked");
        // The table statistics of the last writes arrive within seconds of the load's end.
        let atEnd = await snapshot(client);
        for (let i = 0; i < 40 && (atEnd.tables.messages?.inserts ?? 0) < atEnd.messages; i++) {
          await new Promise((r) => setTimeout(r, 500));
          atEnd = await snapshot(client);
        }
        const walBytes = await client.query<{ bytes: string }>("select pg_wal_lsn_diff($1, $2)::text as bytes", [
          windowEnd.lsn,
          windowStart.lsn,
        ]);
        const inWindow = Math.max(1, windowEnd.messages - windowStart.messages);
        const inRun = Math.max(1, atEnd.messages - atStart.messages);
        let indexEntries = 0;
        const tables: WriteCost["tables"] = {};
        for (const [name, end] of Object.entries(atEnd.tables)) {
          const start = atStart.tables[name] ?? { inserts: 0, updates: 0, hotUpdates: 0, indexes: end.indexes };
          const inserts = end.inserts - start.inserts;
          const updates = end.updates - start.updates;
          const hot = end.hotUpdates - start.hotUpdates;
          if (inserts + updates === 0) continue;
          indexEntries += (inserts + (updates - hot)) * end.indexes;
          tables[name] = {
            rowVersionsPerMessage: Number(((inserts + updates) / inRun).toFixed(2)),
            hotShare: updates > 0 ? Number((hot / updates).toFixed(2)) : null,
          };
        }
        return {
          messages: inWindow,
          walBytesPerMessage: Math.round(Number(walBytes.rows[0]!.bytes) / inWindow),
          fullPageImagesPerMessage: Number(
            ((windowEnd.fullPageImages - windowStart.fullPageImages) / inWindow).toFixed(2),
          ),
          indexEntriesPerMessage: Number((indexEntries / inRun).toFixed(1)),
          tables,
        };
      } finally {
        await client.end();
      }
    },
  };
}
