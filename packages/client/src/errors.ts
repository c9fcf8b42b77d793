import { ErrorCode, isTemporary } from '@switchboard/protocol';

/** Why a connection ended or changed state: a WebSocket close code (or 3002 for a dead link) and text. */
export interface Reason {
  readonly code: number;
  readonly message: string;
}

/**
 * Every error the SDK rejects a promise with. For a failed command `code` is the server's reply
 * code (`ErrorCode`, see docs/errors.md); `temporary` says whether retrying the same command
 * unchanged may succeed (a publish retried with the same id is stored at most once).
 */
export class SwitchboardError extends Error {
  override name = 'SwitchboardError';
  readonly code: number;
  readonly temporary: boolean;
  /**
   * For a failed publish: the message id it was sent with. Publishing again with `{ id:
   * err.messageId }` is safe whatever happened to the first attempt: the server stores an id at
   * most once within its dedupe window.
   */
  messageId: string | undefined;

  constructor(code: number, message: string, temporary = isTemporary(code)) {
    super(message);
    this.code = code;
    this.temporary = temporary;
  }
}

/**
 * The connection was closed by the application (`code` 1000) or failed for good (`code` is the
 * terminal close code). Pending and queued commands are rejected with it; nothing is retried.
 */
export class ConnectionClosedError extends SwitchboardError {
  override name = 'ConnectionClosedError';

  constructor(reason: Reason) {
    super(reason.code, reason.message, false);
  }
}

/** More than `maxQueuedPublishes` publishes were waiting for a connection. Code 106. */
export class QueueFullError extends SwitchboardError {
  override name = 'QueueFullError';

  constructor(max: number) {
    super(ErrorCode.LIMIT_EXCEEDED, `more than ${max} publishes queued while disconnected`, true);
  }
}

/**
 * The server did not answer within `requestTimeoutMs` of the command being sent. Code 118
 * (outcome unknown), temporary. A publish may or may not have been stored: retrying with the
 * same id (`messageId`) is safe.
 */
export class TimeoutError extends SwitchboardError {
  override name = 'TimeoutError';

  constructor(ms: number) {
    super(ErrorCode.OUTCOME_UNKNOWN, `no reply within ${ms} ms`, true);
  }
}

/** The error an error frame (`{"error", "code"}`) carries, or undefined for any other frame. */
export function replyError(frame: Readonly<Record<string, unknown>>): SwitchboardError | undefined {
  const { error, code } = frame;
  if (error === undefined) return undefined;
  return new SwitchboardError(
    typeof code === 'number' ? code : ErrorCode.INTERNAL,
    typeof error === 'string' ? error : 'error',
  );
}
