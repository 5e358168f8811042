/**
 * Timestamps as text.
 *
 * Why it is this way: V8's `toISOString` and `toUTCString` look up the local time zone's name
 * through ICU even though they print UTC, and the first call pages in about 0.7-3 MiB of the
 * executable's ICU data, which stays in a router's RSS for its whole life (measured from
 * /proc/PID/pagemap on Node 24). The UTC getters need no ICU.
 */

/** `ms` (default: now) as ISO 8601 in UTC with milliseconds, as `Date.prototype.toISOString` prints years 0-9999. */
export function isoTime(ms: number = Date.now()): string {
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getUTCFullYear(), 4)}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}T${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}.${p(d.getUTCMilliseconds(), 3)}Z`;
}
