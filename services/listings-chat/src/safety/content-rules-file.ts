import { readFileSync } from "node:fs";
import { ConfigError } from "@listings-chat/shared/node";
import { RE2JS } from "re2js";
import { z } from "zod";
import shippedDefault from "./content-rules.default.json" with { type: "json" };

/**
 * The rules file (`CONTENT_RULES_FILE`, CONTRACT §10): what the platform checks in every message a user
 * sends or edits. Read and checked once at start-up, so that a bad rule stops the process with one line
 * that names the file and the rule instead of failing, or hanging, on a user's message.
 */

/** Detectors with their own library (safety/content-detectors.ts); a word list; an RE2 regular expression. */
export type RuleMatch = "phone" | "email" | "url" | { words: string[] } | { regex: string };

export type RuleAction = "flag" | "mask" | "reject";

export interface ContentRuleSpec {
  /** Stored in the message's `flags`, named in a rejection: what the platform and the sender see. */
  id: string;
  match: RuleMatch;
  action: RuleAction;
}

/** Explains why an RE2 pattern cannot be a rule; undefined when it can. */
function regexProblem(pattern: string): string | undefined {
  let compiled: RE2JS;
  try {
    compiled = RE2JS.compile(pattern);
  } catch (error) {
    // RE2 has no lookaround and no backreferences: those are what make a backtracking engine hang.
    return `not an RE2 regular expression (${(error as Error).message})`;
  }
  if (compiled.test("")) return "matches the empty text, so it would match every message: make it match something";
  return undefined;
}

const word = z
  .string()
  .trim()
  .min(1, "a word must not be empty")
  .max(200, "a word (or phrase) has at most 200 characters");

const match = z.union(
  [
    z.enum(["phone", "email", "url"]),
    z.strictObject({ words: z.array(word).min(1, "list at least one word").max(10_000) }),
    z.strictObject({
      regex: z
        .string()
        .min(1)
        .max(2_000)
        .superRefine((pattern, ctx) => {
          const problem = regexProblem(pattern);
          if (problem) ctx.addIssue({ code: "custom", message: problem });
        }),
    }),
  ],
  { error: 'must be "phone", "email", "url", {"words": [...]} or {"regex": "..."}' },
);

const rule = z.strictObject({
  id: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, "an id is 1-64 characters: lower-case letters, digits, _ . - (e.g. phone)"),
  match,
  action: z.enum(["flag", "mask", "reject"], { error: 'must be "flag", "mask" or "reject"' }),
});

const rulesFile = z.strictObject({
  rules: z
    .array(rule)
    .max(1_000)
    .superRefine((rules, ctx) => {
      const seen = new Set<string>();
      for (const [i, { id }] of rules.entries()) {
        if (seen.has(id)) ctx.addIssue({ code: "custom", path: [i, "id"], message: `the id ${id} is used twice` });
        seen.add(id);
      }
    }),
});

/** "rule 2 (\"scam-words\"): match.regex: …" — which rule, where in it, and what is wrong. */
function describeIssue(json: unknown, issue: z.core.$ZodIssue): string {
  const [top, index, ...rest] = issue.path;
  if (top !== "rules" || typeof index !== "number") {
    return `${issue.path.length ? `${issue.path.join(".")}: ` : ""}${issue.message}`;
  }
  const id = (json as { rules: Array<{ id?: unknown }> }).rules[index]?.id;
  const name = typeof id === "string" ? ` (${JSON.stringify(id)})` : "";
  return `rule ${index + 1}${name}: ${rest.length ? `${rest.join(".")}: ` : ""}${issue.message}`;
}

/**
 * Checks the text of a rules file; `source` names it in the error (a ConfigError: one line to print).
 * @example parseContentRules('{"rules": [{"id": "phone", "match": "phone", "action": "flag"}]}', "rules.json")
 */
export function parseContentRules(text: string, source: string): ContentRuleSpec[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`CONTENT_RULES_FILE ${source}: not JSON (${(error as Error).message})`);
  }
  const parsed = rulesFile.safeParse(json);
  if (parsed.success) return parsed.data.rules;
  const issue = parsed.error.issues[0]!;
  throw new ConfigError(`CONTENT_RULES_FILE ${source}: ${describeIssue(json, issue)}`);
}

/** The rules shipped with the service (content-rules.default.json beside this file, compiled into the bundle). */
export const defaultContentRules: ContentRuleSpec[] = parseContentRules(
  JSON.stringify(shippedDefault),
  "(the shipped default)",
);

/** The rules of `path`, or the shipped default when no file is named. */
export function loadContentRulesFile(
  path: string | undefined,
  read: (path: string) => string = (p) => readFileSync(p, "utf8"),
): ContentRuleSpec[] {
  if (!path) return defaultContentRules;
  let text: string;
  try {
    text = read(path);
  } catch (error) {
    const why = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new ConfigError(
      `CONTENT_RULES_FILE: cannot read ${path} (${why}): mount the rules file there, or unset it for the default`,
    );
  }
  return parseContentRules(text, path);
}
