/**
 * Small SVG pictures for the demo's seeded listings and people (development only, DEV_AUTH=1), served by
 * the demo page's routes at `/dev/img/<name>.svg`: the platform's image_url must be an http(s) URL, and the
 * demo must show them with no network beyond the gateway.
 */

const frame = (background: string, body: string) =>
  `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 120 120" width="120" height="120">` +
  `<rect width="120" height="120" fill="${background}"/>${body}</svg>`;

/** A circle with initials: the avatar of a seeded person. */
const face = (initials: string, background: string) =>
  frame(
    background,
    `<text x="60" y="74" font-family="Arial, Helvetica, sans-serif" font-size="44" font-weight="700" ` +
      `fill="#ffffff" text-anchor="middle">${initials}</text>`,
  );

export const PLACEHOLDER_IMAGES: Readonly<Record<string, string>> = {
  "bike.svg": frame(
    "#dbeafe",
    `<g fill="none" stroke="#1e3a8a" stroke-width="5" stroke-linecap="round" stroke-linejoin="round">` +
      `<circle cx="32" cy="78" r="20"/><circle cx="88" cy="78" r="20"/>` +
      `<path d="M32 78 L50 46 L78 46 L88 78 M50 46 L62 78 L78 46 M46 38 L58 38 M78 46 L74 34 L84 34"/></g>`,
  ),
  "desk.svg": frame(
    "#fde68a",
    `<g fill="#92400e"><rect x="14" y="42" width="92" height="10" rx="2"/><rect x="20" y="52" width="8" height="46"/>` +
      `<rect x="92" y="52" width="8" height="46"/><rect x="62" y="52" width="30" height="22" rx="2"/></g>` +
      `<rect x="72" y="61" width="10" height="4" fill="#fde68a"/>`,
  ),
  "camera.svg": frame(
    "#e5e7eb",
    `<rect x="16" y="38" width="88" height="54" rx="8" fill="#1f2937"/><rect x="26" y="30" width="22" height="10" rx="3" fill="#1f2937"/>` +
      `<circle cx="60" cy="65" r="20" fill="#9ca3af"/><circle cx="60" cy="65" r="12" fill="#111827"/>` +
      `<circle cx="92" cy="47" r="4" fill="#f59e0b"/>`,
  ),
  "armchair.svg": frame(
    "#ede9fe",
    `<g fill="#6d28d9"><rect x="30" y="26" width="60" height="44" rx="12"/><rect x="16" y="52" width="22" height="38" rx="8"/>` +
      `<rect x="82" y="52" width="22" height="38" rx="8"/><rect x="34" y="66" width="52" height="20" rx="6"/></g>` +
      `<g fill="#4c1d95"><rect x="24" y="90" width="6" height="12"/><rect x="90" y="90" width="6" height="12"/></g>`,
  ),
  "anna.svg": face("AK", "#db2777"),
  "marco.svg": face("MR", "#059669"),
  "lena.svg": face("LV", "#d97706"),
};
