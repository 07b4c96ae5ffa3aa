import { RE2JS } from "re2js";
import {
  createPhoneFinder,
  createSiteCheck,
  type FoundLinks,
  findLinks,
  type PhoneRegion,
  type Span,
} from "./content-detectors.ts";
import { type ContentRuleSpec, defaultContentRules } from "./content-rules-file.ts";

/**
 * The content rules (CONTRACT §10) applied to a message before it is stored, on every send and edit.
 *
 * Regular expressions and word lists run in re2js, a JavaScript port of RE2: matching takes time linear in
 * the text whatever the pattern, so no rule can hang the process (`(a+)+$` against 5,000 a's and a "!":
 * ~1 ms; JavaScript's RegExp needs 2.4 s for 28 a's and doubles with each one more). The native `re2`
 * package is ~5× faster per test but builds from source here (its prebuilt download is unreachable):
 * +80 s and a C++ toolchain in every `npm ci` and image build; re2-wasm is slower than both and unmaintained.
 */

export interface ContentRulesOptions {
  rules: readonly ContentRuleSpec[];
  /** DEFAULT_PHONE_REGION: the country whose national form (`(415) 555-2671`) counts as a phone number. */
  phoneRegion: PhoneRegion;
  /** SITE_DOMAINS: hosts, and their subdomains, that the `url` rule lets through (normalized, env.ts). */
  siteDomains: readonly string[];
}

/** The shipped rules with the defaults of their variables (US numbers, every link flagged). */
export const defaultContentRulesOptions: ContentRulesOptions = {
  rules: defaultContentRules,
  phoneRegion: "US",
  siteDomains: [],
};

export interface Verdict {
  /** What to store and send: the text with each `mask` match replaced by `•••`. */
  content: string;
  /**
   * Ids of the `flag` and `mask` rules that matched, in the file's order: stored with the message for the
   * platform (a masked phone number is still an attempt worth knowing about), never shown to users.
   */
  flags: string[];
  /** The first `reject` rule that matched: nothing is stored (422 `content_rejected`). */
  rejectedBy?: string;
}

export interface ContentRules {
  evaluate(text: string): Verdict;
}

export const MASK = "•••";

/** What the finders found in one text, each found once however many rules ask. */
class Scan {
  #links?: FoundLinks;
  #phones?: Span[];
  readonly text: string;
  private readonly findPhones: (text: string) => Span[];
  constructor(text: string, findPhones: (text: string) => Span[]) {
    this.text = text;
    this.findPhones = findPhones;
  }
  get links(): FoundLinks {
    this.#links ??= findLinks(this.text);
    return this.#links;
  }
  get phones(): Span[] {
    this.#phones ??= this.findPhones(this.text);
    return this.#phones;
  }
}

interface Matcher {
  /** Whether the rule matches anywhere: for `flag` and `reject`, which need no positions. */
  test(scan: Scan): boolean;
  spans(scan: Scan): Span[];
}

/**
 * Each search for the next match is linear, but a pattern can make each one read to the end of the text
 * (`.*b|a` on 4,000 a's: 4,000 searches of 4,000 characters, over a second), so a `mask` rule masks its
 * first MAX_MASKED_MATCHES matches one by one and the rest of the text from there as one `•••`: a message
 * with that many matches of one mask rule is not one to deliver as it is anyway.
 */
export const MAX_MASKED_MATCHES = 32;

/** A compiled RE2 pattern; `group` is the capture group that is the match (the word of a word list). */
function re2Matcher(pattern: RE2JS, group = 0): Matcher {
  return {
    // test() runs RE2's DFA without captures: the fast path for flag and reject.
    test: (scan) => pattern.test(scan.text),
    spans(scan) {
      const { text } = scan;
      if (!pattern.test(text)) return [];
      const spans: Span[] = [];
      const m = pattern.matcher(text);
      let from = 0;
      while (from <= text.length && m.find(from)) {
        const start = m.start(group);
        const end = m.end(group);
        if (spans.length === MAX_MASKED_MATCHES) {
          spans.push({ start, end: text.length });
          break;
        }
        if (end > start) spans.push({ start, end });
        // From the end of the word, not of the match: the separator after one word is the one before the next.
        from = Math.max(end, start + 1);
      }
      return spans;
    },
  };
}

/**
 * Whole words and phrases, in any case, any white space between a phrase's words: `western union` matches
 * "Western  Union" but not "westernunion", and `scam` not "scampi". Letters and digits of every script
 * count as word characters (RE2's \b knows only ASCII ones).
 */
function wordsPattern(words: readonly string[]): RE2JS {
  const escaped = words.map((w) => w.split(/\s+/).map(RE2JS.quote).join("\\s+"));
  return RE2JS.compile(`(?i)(?:^|[^\\pL\\pN_])(${escaped.join("|")})(?:[^\\pL\\pN_]|$)`);
}

function matcherOf(spec: ContentRuleSpec, options: ContentRulesOptions): Matcher {
  const { match } = spec;
  if (match === "phone") {
    return { test: (scan) => scan.phones.length > 0, spans: (scan) => scan.phones };
  }
  if (match === "email") {
    return { test: (scan) => scan.links.emails.length > 0, spans: (scan) => scan.links.emails };
  }
  if (match === "url") {
    const isOwnSite = createSiteCheck(options.siteDomains);
    const foreign = (scan: Scan) => scan.links.urls.filter((link) => !isOwnSite(link.host));
    return { test: (scan) => foreign(scan).length > 0, spans: foreign };
  }
  if ("words" in match) return re2Matcher(wordsPattern(match.words), 1);
  return re2Matcher(RE2JS.compile(match.regex));
}

/** Overlapping and touching matches become one `•••`. */
function mask(text: string, spans: Span[]): string {
  spans.sort((a, b) => a.start - b.start);
  let out = "";
  let at = 0;
  for (const { start, end } of spans) {
    if (end <= at) continue;
    // A span that starts inside (or right at the end of) the last mask only makes it longer.
    if (!(out && start <= at)) out += text.slice(at, start) + MASK;
    at = end;
  }
  return out + text.slice(at);
}

/**
 * Compiles the rules once (server.ts); `evaluate` is then pure and synchronous.
 * @example createContentRules(defaultContentRulesOptions).evaluate("call (415) 555-2671").flags // ["phone"]
 */
export function createContentRules(options: ContentRulesOptions): ContentRules {
  const findPhones = createPhoneFinder(options.phoneRegion);
  const compiled = options.rules.map((spec) => ({ ...spec, matcher: matcherOf(spec, options) }));
  // A rejection makes every other rule moot: those are tried first.
  const rejecting = compiled.filter((rule) => rule.action === "reject");
  const others = compiled.filter((rule) => rule.action !== "reject");

  return {
    evaluate(text) {
      const scan = new Scan(text, findPhones);
      for (const rule of rejecting) {
        if (rule.matcher.test(scan)) return { content: text, flags: [], rejectedBy: rule.id };
      }
      const flags: string[] = [];
      const masked: Span[] = [];
      for (const rule of others) {
        if (rule.action === "flag") {
          if (rule.matcher.test(scan)) flags.push(rule.id);
          continue;
        }
        const spans = rule.matcher.spans(scan);
        if (spans.length === 0) continue;
        flags.push(rule.id);
        masked.push(...spans);
      }
      return { content: masked.length ? mask(text, masked) : text, flags };
    },
  };
}
