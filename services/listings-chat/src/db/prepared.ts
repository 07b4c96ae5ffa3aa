import type { Database } from "./client.ts";

/**
 * A query prepared once per database, for the paths every connect or send takes: drizzle builds its SQL
 * once instead of on every call, and node-postgres sends it as a named statement, so PostgreSQL parses and
 * plans it once per connection.
 */
export function preparedPerDatabase<Query>(prepare: (db: Database) => Query): (db: Database) => Query {
  const prepared = new WeakMap<Database, Query>();
  return (db) => {
    let query = prepared.get(db);
    if (!query) {
      query = prepare(db);
      prepared.set(db, query);
    }
    return query;
  };
}
