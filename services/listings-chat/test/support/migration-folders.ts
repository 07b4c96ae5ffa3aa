import { mkdirSync, rmSync, writeFileSync } from "node:fs";
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
