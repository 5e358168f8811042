/**
 * A random first port for a test's `span` listeners on loopback, below the kernel's ephemeral
 * range (32768 and up by default): a port there may be the local end of any outgoing
 * connection on the machine (the test's own included), and listening on it fails.
 */
export function portBase(span = 200): number {
  return 10_000 + Math.floor(Math.random() * (32_768 - 10_000 - span));
}
