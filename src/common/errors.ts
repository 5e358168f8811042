/**
 * Typed errors shared by the plugin, the router and the CLI.
 *
 * Each class names a failure, not a CNI code: the plugin's boundary (`src/cni/errors.ts`) is the
 * one place that maps them to CNI error codes. `kind` survives the trip over the router API, so
 * an error raised in the router is rebuilt as the same class in the plugin.
 */
export class WeftError extends Error {
  /** Stable machine-readable name; also the wire name in router API errors. */
  readonly kind: string = 'internal';
  /** Longer explanation for the CNI `details` field. */
  details?: string;
  constructor(message: string, details?: string) {
    super(message);
    this.details = details;
  }
}

/** A config field is missing or invalid. `field` is the dotted path, e.g. `ipam.subnet`. */
export class ConfigError extends WeftError {
  override readonly kind = 'config';
  constructor(readonly field: string, message: string) {
    super(field ? `${field}: ${message}` : message);
  }
}

/** A CNI_* environment variable is missing or invalid. */
export class EnvError extends WeftError {
  override readonly kind = 'env';
  constructor(readonly variable: string, message: string) {
    super(`${variable}: ${message}`);
  }
}

/** stdin is not JSON, or not a JSON object. */
export class DecodeError extends WeftError {
  override readonly kind = 'decode';
}

/** The config's cniVersion is not supported, or too old for the verb. */
export class VersionError extends WeftError {
  override readonly kind = 'version';
}

/** A field the plugin understands but cannot honour. */
export class UnsupportedFieldError extends WeftError {
  override readonly kind = 'unsupported-field';
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
  }
}

/** The router cannot be reached (socket missing, refused, or no answer before the deadline). */
export class RouterUnavailableError extends WeftError {
  override readonly kind = 'router-unavailable';
}

/** No free address could be had (pool exhausted, or no space within the deadline). */
export class NoSpaceError extends WeftError {
  override readonly kind = 'no-space';
}

/** A requested address is held by another attachment, or owned by another peer. */
export class AddressInUseError extends WeftError {
  override readonly kind = 'address-in-use';
}

/** The container's interface name already exists in its netns (CNI 1.0 ADD rule). */
export class InterfaceExistsError extends WeftError {
  override readonly kind = 'interface-exists';
}

/** CHECK found the attachment not as ADD left it. */
export class CheckFailedError extends WeftError {
  override readonly kind = 'check-failed';
}

/** A system command failed or timed out. */
export class SysError extends WeftError {
  override readonly kind: string = 'sys';
  constructor(message: string, readonly stderr = '', readonly exitCode: number | null = null) {
    super(message, stderr.trim() || undefined);
  }
}

/** A network namespace path does not exist or is not a network namespace. */
export class NetnsNotFoundError extends SysError {
  override readonly kind = 'netns-not-found';
}

/** A network device does not exist. */
export class LinkNotFoundError extends SysError {
  override readonly kind = 'link-not-found';
}

/** An address to remove is not on the device. */
export class AddressNotFoundError extends SysError {
  override readonly kind = 'address-not-found';
}

/** A forwarding entry, route or other kernel object to remove does not exist. */
export class EntryNotFoundError extends SysError {
  override readonly kind = 'entry-not-found';
}

/** The kernel refused to create something that exists already (a device, an address, a route). */
export class ExistsError extends SysError {
  override readonly kind = 'exists';
}

/**
 * A mesh connection's crypto handshake failed: the peer speaks no weft handshake, an unknown
 * version, or sent a malformed message. The connection is closed.
 */
export class HandshakeError extends WeftError {
  override readonly kind: string = 'handshake';
}

/**
 * One side of a connection has a shared secret (password) and the other has none. The message
 * says which side lacks it, so the operator knows which router to fix.
 */
export class EncryptionMismatchError extends HandshakeError {
  override readonly kind = 'encryption-mismatch';
}

/**
 * Authentication failed: a peer could not prove it holds the same secret (handshake), or a
 * sealed frame was altered, replayed or reordered. The connection is closed.
 */
export class AuthenticationError extends HandshakeError {
  override readonly kind = 'authentication';
}

/** The router has no such endpoint (an older router than this plugin or CLI). */
export class NotFoundError extends WeftError {
  override readonly kind = 'not-found';
}

/** A request to the router was malformed (CLI or plugin sent something the API rejects). */
export class BadRequestError extends WeftError {
  override readonly kind = 'bad-request';
}

/**
 * The Kubernetes API refused a request or did not answer in time. `code` is the HTTP status
 * (409 for a stale resourceVersion, 404 for a missing object), 0 when no answer came.
 */
export class KubeApiError extends WeftError {
  override readonly kind = 'kube-api';
  constructor(message: string, readonly code = 0, readonly reason?: string) {
    super(message);
  }
}

/**
 * A Kubernetes object (Pod, Namespace, NetworkPolicy) is malformed. `object` names it
 * (`NetworkPolicy x/deny`), `field` is the dotted path inside it (`spec.ingress.0.ports.1.endPort`).
 */
export class ObjectError extends WeftError {
  override readonly kind = 'invalid-object';
  constructor(
    readonly object: string,
    readonly field: string,
    message: string,
  ) {
    super(`${object}: ${field ? `${field}: ` : ''}${message}`);
  }
}

const byKind: Record<string, (msg: string) => WeftError> = {
  config: (m) => new ConfigError('', m),
  env: (m) => new EnvError('', m),
  decode: (m) => new DecodeError(m),
  'unsupported-field': (m) => new UnsupportedFieldError('', m),
  version: (m) => new VersionError(m),
  'router-unavailable': (m) => new RouterUnavailableError(m),
  'no-space': (m) => new NoSpaceError(m),
  'address-in-use': (m) => new AddressInUseError(m),
  'interface-exists': (m) => new InterfaceExistsError(m),
  'check-failed': (m) => new CheckFailedError(m),
  sys: (m) => new SysError(m),
  'netns-not-found': (m) => new NetnsNotFoundError(m),
  'link-not-found': (m) => new LinkNotFoundError(m),
  exists: (m) => new ExistsError(m),
  'address-not-found': (m) => new AddressNotFoundError(m),
  'entry-not-found': (m) => new EntryNotFoundError(m),
  'bad-request': (m) => new BadRequestError(m),
  'kube-api': (m) => new KubeApiError(m),
  'invalid-object': (m) => new ObjectError('', '', m),
  'not-found': (m) => new NotFoundError(m),
};

/** Wire form of an error in router API responses. */
export interface ErrorBody {
  error: { kind: string; message: string; details?: string };
}

export function errorBody(err: unknown): ErrorBody {
  if (err instanceof WeftError) return { error: { kind: err.kind, message: err.message, details: err.details } };
  return { error: { kind: 'internal', message: err instanceof Error ? err.message : String(err) } };
}

/** Rebuilds the error class from a router API error body. */
export function errorFromBody(body: ErrorBody): WeftError {
  const make = byKind[body.error.kind];
  const err = make ? make(body.error.message) : new WeftError(body.error.message);
  // the message already carries any field prefix; keep it verbatim
  err.message = body.error.message;
  err.details = body.error.details;
  return err;
}
