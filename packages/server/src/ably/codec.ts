/**
 * The Ably wire (protocol v6): ProtocolMessage actions, flags, error bodies, and the two framings
 * a connection negotiates with `format=`: one JSON ProtocolMessage per text frame, or one msgpack
 * map per binary frame (the Node SDK's default). Pure: no I/O.
 */
import { Packr } from 'msgpackr';

export const Action = {
  HEARTBEAT: 0,
  ACK: 1,
  NACK: 2,
  CONNECT: 3,
  CONNECTED: 4,
  DISCONNECT: 5,
  DISCONNECTED: 6,
  CLOSE: 7,
  CLOSED: 8,
  ERROR: 9,
  ATTACH: 10,
  ATTACHED: 11,
  DETACH: 12,
  DETACHED: 13,
  PRESENCE: 14,
  MESSAGE: 15,
  SYNC: 16,
  AUTH: 17,
} as const;

export const Flag = {
  HAS_PRESENCE: 1,
  HAS_BACKLOG: 2,
  RESUMED: 4,
  PRESENCE: 1 << 16,
  PUBLISH: 1 << 17,
  SUBSCRIBE: 1 << 18,
  PRESENCE_SUBSCRIBE: 1 << 19,
} as const;

/** The modes a client may ask for in ATTACH flags. */
export const MODE_MASK = Flag.PRESENCE | Flag.PUBLISH | Flag.SUBSCRIBE | Flag.PRESENCE_SUBSCRIBE;

/** Ably error codes the dialect sends (the SDK acts on them; see docs/ably.md). */
export const AblyCode = {
  BAD_REQUEST: 40000,
  INVALID_PARAMETER: 40003,
  INVALID_MESSAGE_DATA: 40013,
  TOO_BIG: 40009,
  INVALID_CHANNEL_NAME: 40010,
  CLIENT_ID_MISMATCH: 40012,
  UNSUPPORTED_VERSION: 40006,
  UNAUTHORIZED: 40100,
  INVALID_CREDENTIALS: 40101,
  INCOMPATIBLE_CLIENT_ID: 40102,
  NO_KEY: 40104,
  TOKEN_REVOKED: 40141,
  TOKEN_EXPIRED: 40142,
  CHANNEL_DENIED: 40160,
  OPERATION_DENIED: 40160,
  RATE_LIMITED: 42910,
  INTERNAL: 50000,
  UNAVAILABLE: 50003,
  CONNECTION_EXPIRED: 80008,
  /** Presence without a clientId (the connection's or the message's). */
  PRESENCE_NO_CLIENT_ID: 91000,
  /** The channel has the most members it may have (presenceMaxMembers). */
  PRESENCE_FULL: 91003,
  SERVER_CLOSED: 80017,
} as const;

export interface AblyErrorInfo {
  readonly message: string;
  readonly code: number;
  readonly statusCode: number;
}

export function ablyError(code: number, message: string, statusCode?: number): AblyErrorInfo {
  return { message, code, statusCode: statusCode ?? Math.floor(code / 100) };
}

/** A ProtocolMessage as read from or written to the wire; only the fields the dialect uses. */
export interface ProtocolMessage {
  action: number;
  id?: string;
  channel?: string;
  channelSerial?: string;
  connectionId?: string;
  msgSerial?: number;
  count?: number;
  flags?: number;
  timestamp?: number;
  error?: AblyErrorInfo;
  messages?: unknown[];
  presence?: unknown[];
  params?: Record<string, string>;
  connectionDetails?: Record<string, unknown>;
  res?: unknown[];
  auth?: { accessToken?: string };
  [field: string]: unknown;
}

export type Format = 'json' | 'msgpack';

// Plain maps, never msgpackr's record extension: the SDK's @ably/msgpack-js reads standard msgpack.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

export function encodeJson(pm: ProtocolMessage): string {
  return JSON.stringify(pm);
}

export function encodeMsgpack(pm: ProtocolMessage): Buffer {
  return packr.pack(pm);
}

/** Any value as msgpack (REST bodies). */
export function packValue(value: unknown): Buffer {
  return packr.pack(value);
}

export function unpackValue(data: Buffer): unknown {
  return packr.unpack(data);
}

/** A frame's ProtocolMessage, or why it is not one. */
export function decodeFrame(data: string | Buffer): ProtocolMessage | string {
  let value: unknown;
  try {
    value = typeof data === 'string' ? JSON.parse(data) : packr.unpack(data);
  } catch {
    return typeof data === 'string' ? 'frame is not JSON' : 'frame is not msgpack';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return 'a ProtocolMessage must be an object';
  const pm = value as ProtocolMessage;
  if (typeof pm.action !== 'number' || !Number.isInteger(pm.action))
    return 'action must be an integer';
  if (pm.channel !== undefined && typeof pm.channel !== 'string') return 'channel must be a string';
  if (pm.msgSerial !== undefined && (typeof pm.msgSerial !== 'number' || pm.msgSerial < 0))
    return 'msgSerial must be a non-negative number';
  return pm;
}
