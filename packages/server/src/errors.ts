import { ErrorCode, isTemporary, type ErrorCodeValue } from '@switchboard/protocol';

/** A command failed; the connection stays. `code` is one of protocol's ErrorCode values. */
export class ReplyError extends Error {
  readonly code: ErrorCodeValue;
  readonly temporary: boolean;

  constructor(code: ErrorCodeValue, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ReplyError';
    this.code = code;
    this.temporary = isTemporary(code);
  }
}

/** Maps any failure to a ReplyError; unknown failures become INTERNAL without leaking details. */
export function toReplyError(err: unknown): ReplyError {
  if (err instanceof ReplyError) return err;
  return new ReplyError(ErrorCode.INTERNAL, 'internal error', { cause: err });
}
