/**
 * The one place that maps weft's errors to CNI error codes.
 *
 * Codes 1-11 and 50-51 are the spec's; 100+ are weft's own: 100 a system or internal failure,
 * 101 an address already in use, 102 the interface name already taken in the netns, 103 CHECK
 * found the attachment changed.
 */
import {
  AddressInUseError,
  BadRequestError,
  CheckFailedError,
  ConfigError,
  DecodeError,
  EnvError,
  InterfaceExistsError,
  NetnsNotFoundError,
  NoSpaceError,
  RouterUnavailableError,
  UnsupportedFieldError,
  VersionError,
  WeftError,
} from '../common/errors';
import type { Verb } from './env';

export interface CniError {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export const CODES = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  io: 5,
  decode: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  notAvailable: 50,
  notAvailableDegraded: 51,
  internal: 100,
  addressInUse: 101,
  interfaceExists: 102,
  checkFailed: 103,
} as const;

export function cniCode(err: unknown, verb: Verb | undefined): number {
  const unavailable = err instanceof RouterUnavailableError || err instanceof NoSpaceError;
  if (unavailable) return verb === 'STATUS' ? CODES.notAvailable : CODES.tryAgainLater;
  if (err instanceof VersionError) return CODES.incompatibleVersion;
  if (err instanceof UnsupportedFieldError) return CODES.unsupportedField;
  // a namespace that vanished between the check of CNI_NETNS and its use is still a bad CNI_NETNS
  if (err instanceof EnvError || err instanceof NetnsNotFoundError) return CODES.invalidEnv;
  if (err instanceof DecodeError) return CODES.decode;
  if (err instanceof ConfigError || err instanceof BadRequestError) return CODES.invalidConfig;
  if (err instanceof AddressInUseError) return CODES.addressInUse;
  if (err instanceof InterfaceExistsError) return CODES.interfaceExists;
  if (err instanceof CheckFailedError) return CODES.checkFailed;
  return CODES.internal;
}

export function toCniError(err: unknown, verb: Verb | undefined, cniVersion: string): CniError {
  const msg = err instanceof Error ? err.message : String(err);
  const details = err instanceof WeftError ? err.details : undefined;
  return { cniVersion, code: cniCode(err, verb), msg, ...(details ? { details } : {}) };
}
