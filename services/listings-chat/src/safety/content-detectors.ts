import {
  type CountryCode,
  findPhoneNumbersInText,
  getCountries,
  getCountryCallingCode,
  isSupportedCountry,
  Metadata,
} from "libphonenumber-js/max";
import * as linkify from "linkifyjs";

/**
 * What the `phone`, `email` and `url` rules look for, each with a maintained library rather than a pattern
 * of ours: libphonenumber-js (Google's libphonenumber metadata, the "max" set, so that a number must be
 * valid for its country, not only of the right length) and linkifyjs (the whole IANA list of top-level
 * domains, links without a scheme, e-mail addresses). Each finder first asks a cheap question that every
 * match must pass, so that most messages never reach the library (bench figures in the README).
 */

/** Where a match is in the text, in UTF-16 code units as String.prototype.slice counts. */
export interface Span {
  start: number;
  end: number;
}

export type PhoneRegion = CountryCode;

/** True for a region libphonenumber knows (ISO 3166-1 alpha-2, upper case: `US`, `GB`, `DE`). */
export function isPhoneRegion(region: string): region is PhoneRegion {
  return isSupportedCountry(region);
}

/**
 * The fewest digits a valid number can have written anywhere: in the national form of `region`, or in
 * international form from any country (country code and national number). US: 10 national, 6 international
 * (Austria, +43 and 4 digits), so 6.
 */
function fewestDigits(region: PhoneRegion): number {
  const metadata = new Metadata();
  const shortest = (country: CountryCode) => {
    metadata.selectNumberingPlan(country);
    return Math.min(...(metadata.numberingPlan?.possibleLengths() ?? [1]));
  };
  let fewest = shortest(region);
  for (const country of getCountries()) {
    fewest = Math.min(fewest, getCountryCallingCode(country).length + shortest(country));
  }
  return fewest;
}

/**
 * Characters of digit runs (with their margins) that libphonenumber reads in one message. It costs ~0.15 µs
 * per character of prose but ~11 µs per character of digits and separators ("12, 12, 12, …": 46 ms for
 * 4,000), so a message past this is not read number by number beyond it: each remaining run long enough to
 * hold a number counts as one. Stopping there instead (its own `maxTries`) would let a number hide behind
 * enough digits. ~5 ms at most; a message with five numbers or dates reads ~250.
 */
export const PHONE_SCAN_BUDGET = 512;

interface Window extends Span {
  runs: Span[];
}

/**
 * Phone numbers in international form, and in the national form of `region`.
 * @example createPhoneFinder("US")("call me at (415) 555-2671") // [{ start: 11, end: 25 }]
 */
export function createPhoneFinder(region: PhoneRegion): (text: string) => Span[] {
  // libphonenumber's candidates are blocks of digits with at most 4 punctuation characters between blocks
  // (PhoneNumberMatcher's PATTERN; no letters): a number it accepts lies in a run of at least `fewest`
  // digits so joined. Only such runs, with margins for what it reads around a candidate (up to two "+(" with
  // their punctuation and the letter before; a ":30" or an extension such as " extension 12345" after), are
  // given to it, so a long message with one number costs what a short one does, and a message without such
  // a run nothing. The runs are found in linear time (the gap class excludes digits: one way to match).
  const fewest = fewestDigits(region);
  const runPattern = new RegExp(`\\p{Nd}(?:[^\\p{L}\\p{Nd}]{0,4}\\p{Nd}){${fewest - 1},}`, "gu");
  const before = 12;
  const after = 16;

  /** The runs, each with its margins; runs whose margins meet share a window. */
  function windowsOf(text: string): Window[] {
    const windows: Window[] = [];
    for (const match of text.matchAll(runPattern)) {
      const run = { start: match.index, end: match.index + match[0].length };
      const start = Math.max(0, run.start - before);
      const end = Math.min(text.length, run.end + after);
      const last = windows.at(-1);
      if (last && start <= last.end) {
        last.end = end;
        last.runs.push(run);
      } else {
        windows.push({ start, end, runs: [run] });
      }
    }
    return windows;
  }

  return (text) => {
    const found: Span[] = [];
    let read = 0;
    for (const window of windowsOf(text)) {
      read += window.end - window.start;
      if (read > PHONE_SCAN_BUDGET) {
        found.push(...window.runs);
        continue;
      }
      for (const n of findPhoneNumbersInText(text.slice(window.start, window.end), { defaultCountry: region })) {
        const number = { start: window.start + n.startsAt, end: window.start + n.endsAt };
        // Digits in a margin belong to no run long enough to be a number: only what touches a run counts.
        if (window.runs.some((r) => number.start < r.end && r.start < number.end)) found.push(number);
      }
    }
    return found;
  };
}

export interface FoundLinks {
  emails: Span[];
  /** Each link with its host (lower case, IDN in punycode; "" for a scheme without one). */
  urls: Array<Span & { host: string }>;
}

/** A dot, an `@` or a `:` inside a word: every link and address has one. */
const linkish = /[.@:]\S/g;
const space = /\s/;
const isSpace = (text: string, at: number) => space.test(text[at]!);

/**
 * The words (white space apart) that hold a `linkish` mark, with where each starts. Only those are
 * looked at: a 4,000-character message with one link costs ~6 µs here, not the ~50 µs of going through
 * its 700 words, nor the ~400 µs of linkify reading all of it.
 */
function* linkishWords(text: string): Generator<{ word: string; offset: number }> {
  let done = 0;
  for (const mark of text.matchAll(linkish)) {
    if (mark.index < done) continue;
    let start = mark.index;
    while (start > done && !isSpace(text, start - 1)) start -= 1;
    let end = mark.index + 1;
    while (end < text.length && !isSpace(text, end)) end += 1;
    done = end;
    yield { word: text.slice(start, end), offset: start };
  }
}

/** "Fine.It works": two sentences run together, not a link to the .it domain someone wrote out. */
function looksLikeSentences(value: string): boolean {
  if (value.includes("/") || /^www\./i.test(value)) return false;
  return /\.[A-Z][a-z]+$/.test(value);
}

function hostOf(href: string): string {
  try {
    return new URL(href).hostname.toLowerCase();
  } catch {
    return "";
  }
}

/**
 * E-mail addresses and links, with or without a scheme ("example.com/x", "www.foo.net").
 * @example findLinks("mail a.b+shop@gmail.com or see example.com/x").urls[0].host // "example.com"
 */
export function findLinks(text: string): FoundLinks {
  const found: FoundLinks = { emails: [], urls: [] };
  // Links hold no white space: linkify reads only the words that could be one.
  for (const { word, offset } of linkishWords(text)) {
    for (const link of linkify.find(word)) {
      const span = { start: offset + link.start, end: offset + link.end };
      if (link.type === "email" || link.href.toLowerCase().startsWith("mailto:")) {
        found.emails.push(span);
      } else if (link.type === "url") {
        const schemeless = !/^[a-z][a-z0-9+.-]*:/i.test(link.value);
        const host = hostOf(link.href);
        // "localhost" alone is a word, not a site; "Fine.It" is two sentences.
        if (schemeless && (!host.includes(".") || looksLikeSentences(link.value))) continue;
        found.urls.push({ ...span, host });
      }
    }
  }
  return found;
}

/** A host name as SITE_DOMAINS holds it (lower case, IDN in punycode); undefined when it is not one. */
export function normalizeSiteDomain(domain: string): string | undefined {
  const trimmed = domain.trim().toLowerCase();
  if (!/^[^\s/:@?#]+$/.test(trimmed)) return undefined;
  const host = hostOf(`http://${trimmed}`);
  const wellFormed = host.includes(".") && !host.startsWith(".") && !host.endsWith(".");
  return wellFormed ? host : undefined;
}

/**
 * True for a host of our own site: one of `domains` or a subdomain of one (`m.example.com` for
 * `example.com`), never a host that merely ends with the same letters (`badexample.com`).
 */
export function createSiteCheck(domains: readonly string[]): (host: string) => boolean {
  const own = new Set(domains);
  return (host) => {
    // The host, then each of its parent domains: m.example.com, example.com, com.
    for (let suffix = host; suffix; suffix = suffix.slice(suffix.indexOf(".") + 1 || suffix.length)) {
      if (own.has(suffix)) return true;
    }
    return false;
  };
}
