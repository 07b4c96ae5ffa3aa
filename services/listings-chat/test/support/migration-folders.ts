import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A migrations folder as drizzle-kit writes one (`<tag>.sql` files and meta/_journal.json listing them), and,
 * when given, its repeatable sources in `functions/` (replaced whole: a file left out is removed).
 */
export function writeMigrationFolder(
  dir: string,
  files: Array<[tag: string, sql: string]>,
  functions?: Record<string, string>,
): string {
  mkdirSync(join(dir, "meta"), { recursive: true });
  for (const [tag, sql] of files) writeFileSync(join(dir, `${tag}.sql`), sql);
  const entries = files.map(([tag], idx) => ({
    idx,
    version: "7",
    when: 1_700_000_000_000 + idx,
    tag,
    breakpoints: true,
  }));
  writeFileSync(join(dir, "meta", "_journal.json"), JSON.stringify({ version: "7", dialect: "postgresql", entries }));
  if (functions) {
    const folder = join(dir, "functions");
    rmSync(folder, { recursive: true, force: true });
    mkdirSync(folder);
    for (const [name, sql] of Object.entries(functions)) writeFileSync(join(folder, `${name}.sql`), sql);
  }
  return dir;
}

interface JournalEntry {
  idx: number;
  version: string;
  when: number;
  tag: string;
  breakpoints: boolean;
}

/**
 * A copy of the migrations folder `from` in a new temporary directory (the caller removes it): the journal cut
 * after the file `lastTag` (all of it when null), then the files of `extra` appended. The copied files are
 * byte for byte the originals, so a database migrated from the copy has the checksums the real folder expects.
 * The repeatable sources (`functions/`) are the release's newest, written for its newest schema: they are copied
 * only with the whole journal.
 */
export function migrationsFolderCopy(
  from: string,
  lastTag: string | null,
  extra: Array<[tag: string, sql: string]> = [],
): string {
  const dir = mkdtempSync(join(tmpdir(), "lc-migrations-"));
  const journal = JSON.parse(readFileSync(join(from, "meta", "_journal.json"), "utf8")) as {
    entries: JournalEntry[];
  };
  let entries = journal.entries;
  if (lastTag !== null) {
    const last = entries.findIndex((e) => e.tag === lastTag);
    if (last < 0) throw new Error(`${lastTag} is not in the journal of ${from}`);
    entries = entries.slice(0, last + 1);
  }
  cpSync(from, dir, {
    recursive: true,
    filter: (source) => lastTag === null || !source.startsWith(join(from, "functions")),
  });
  const newest = entries.at(-1)?.when ?? 0;
  for (const [i, [tag, sql]] of extra.entries()) {
    writeFileSync(join(dir, `${tag}.sql`), sql);
    entries = [...entries, { idx: entries.length, version: "7", when: newest + i + 1, tag, breakpoints: true }];
  }
  writeFileSync(join(dir, "meta", "_journal.json"), JSON.stringify({ ...journal, entries }, null, 2));
  return dir;
}
