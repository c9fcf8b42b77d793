/**
 * Error and disconnect codes shared by the server and its clients.
 *
 * Reply errors (the command failed, the connection stays) use 100-399; 400-1999 are left to
 * applications. Disconnect codes follow the WebSocket close-code ranges: 3000-3499 tell the client
 * to reconnect, 3500-3999 tell it not to; 4000-4999 are left to applications, split the same way.
 * Every code has a heading in docs/errors.md and a test fails when one is missing.
 */

export const ErrorCode = {
  INTERNAL: 100,
  UNAUTHORIZED: 101,
  UNKNOWN_CHANNEL: 102,
  PERMISSION_DENIED: 103,
  UNKNOWN_ACTION: 104,
  ALREADY_SUBSCRIBED: 105,
  LIMIT_EXCEEDED: 106,
  BAD_REQUEST: 107,
  NOT_AVAILABLE: 108,
  NOT_SUBSCRIBED: 109,
  INVALID_JSON: 110,
  TOO_MANY_REQUESTS: 111,
  UNRECOVERABLE_POSITION: 112,
  INVALID_CHANNEL: 113,
  PAYLOAD_TOO_LARGE: 114,
  NOT_FOUND: 115,
  METHOD_NOT_ALLOWED: 116,
  PRESENCE_DISABLED: 117,
  OUTCOME_UNKNOWN: 118,
  UNSUPPORTED_MEDIA_TYPE: 119,
  /** The node's web pages (front page, SDK bundle) were not built with the server. */
  WEB_NOT_BUILT: 120,
  /** A presence member's data is larger than presenceMaxDataBytes. */
  PRESENCE_DATA_TOO_LARGE: 145,
  /** The channel already has presenceMaxMembers members. */
  PRESENCE_CHANNEL_FULL: 146,
  /** The connection is a member of presenceMaxEntersPerConnection channels already. */
  PRESENCE_TOO_MANY_ENTERS: 147,
  /** leave (or update with leave semantics) on a channel the connection has not entered. */
  PRESENCE_NOT_ENTERED: 148,
  /** The connection already entered with another presence key. */
  PRESENCE_KEY_MISMATCH: 149,
  /** A channel-listing cursor that this server did not issue. */
  INVALID_LIST_CURSOR: 180,
  /** A channel-listing prefix with characters outside the channel charset. */
  INVALID_CHANNEL_PREFIX: 181,
  /** An admin endpoint was called without admin credentials (no key, cookie or session). */
  ADMIN_UNAUTHENTICATED: 190,
  /** The credentials are valid but not an admin's (a client token, a key without `admin`). */
  ADMIN_FORBIDDEN: 191,
  /** The admin password given to POST /v1/admin/login is wrong. */
  ADMIN_BAD_PASSWORD: 192,
  /** Too many failed admin logins from this address; wait for Retry-After. */
  ADMIN_LOCKED_OUT: 193,
  /** A write with the session cookie lacks the matching X-CSRF-Token header. */
  ADMIN_CSRF: 194,
  /** Password login is not configured (no adminPassword or adminPasswordHash). */
  ADMIN_LOGIN_DISABLED: 195,
} as const;

export type ErrorCodeName = keyof typeof ErrorCode;
export type ErrorCodeValue = (typeof ErrorCode)[ErrorCodeName];

/** HTTP status used by the REST API for each reply error code. */
export const errorHttpStatus: Readonly<Record<ErrorCodeValue, number>> = {
  100: 500,
  101: 401,
  102: 404,
  103: 403,
  104: 400,
  105: 409,
  106: 429,
  107: 400,
  108: 503,
  109: 409,
  110: 400,
  111: 429,
  112: 409,
  113: 400,
  114: 413,
  115: 404,
  116: 405,
  117: 404,
  118: 504,
  119: 415,
  120: 503,
  145: 413,
  146: 409,
  147: 429,
  148: 409,
  149: 409,
  180: 400,
  181: 400,
  190: 401,
  191: 403,
  192: 401,
  193: 429,
  194: 403,
  195: 404,
};

/** Whether a client may retry the same command unchanged and expect a different outcome. */
export function isTemporary(code: number): boolean {
  return (
    code === ErrorCode.INTERNAL ||
    code === ErrorCode.NOT_AVAILABLE ||
    code === ErrorCode.OUTCOME_UNKNOWN ||
    code === ErrorCode.TOO_MANY_REQUESTS
  );
}

/**
 * WebSocket close codes the server uses. 1000-1015 are RFC 6455's own; ws sends 1009 itself when
 * a frame exceeds the size limit.
 */
export const DisconnectCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  /** The node is shutting down or draining; reconnect, preferably elsewhere. */
  SHUTDOWN: 3001,
  /** The client did not answer heartbeats in time. */
  NO_PONG: 3002,
  /** The connection's token expired without a refresh; get a new token and reconnect. */
  TOKEN_EXPIRED: 3005,
  /** The client read too slowly and its outbound queue overflowed; reconnect and resume. */
  SLOW: 3008,
  /** Too many connections (node, user or address); reconnect later with backoff. */
  TOO_MANY_CONNECTIONS: 3009,
  /** The server could not keep the client's stream consistent; reconnect and resume. */
  INSUFFICIENT_STATE: 3010,
  /** The client kept sending commands over its rate after being refused; reconnect later, slower. */
  FLOODING: 3011,
  /**
   * The node is draining (a deploy or scale-down): reconnect at once, to another node, and resume.
   * Not a failure: no backoff, and the retry counts as a first attempt.
   */
  DRAINING: 3012,
  /** Credentials missing, invalid or revoked; reconnect only with new credentials. */
  UNAUTHORIZED: 3500,
  /** Too many malformed frames in a row; the client is broken. Do not reconnect unchanged. */
  BAD_REQUEST: 3501,
} as const;

export type DisconnectCodeName = keyof typeof DisconnectCode;
export type DisconnectCodeValue = (typeof DisconnectCode)[DisconnectCodeName];

/** Whether a client should reconnect after a close with this code. */
export function shouldReconnect(code: number): boolean {
  if (code >= 3500 && code < 4000) return false;
  if (code >= 4500 && code < 5000) return false;
  return (
    code !== DisconnectCode.NORMAL &&
    code !== DisconnectCode.PROTOCOL_ERROR &&
    code !== DisconnectCode.UNSUPPORTED_DATA
  );
}
