import type { IncomingMessage } from 'node:http';
import { ErrorCode } from '@switchboard/protocol';
import { ReplyError } from '../errors.js';

/**
 * Reads a request body, refusing more than `limit` bytes without buffering past it (a declared
 * Content-Length over the limit is refused before any byte is read). The refusal is the caller's
 * own error, so each dialect answers in its own shape. Shared by the REST API, the HTTP
 * transports and the Ably REST routes.
 */
export function readRawBody(
  req: IncomingMessage,
  limit: number,
  tooLarge: () => Error,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (Number(req.headers['content-length'] ?? 0) > limit) {
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', (err) => {
      if (!failed) reject(err);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
  });
}

/** A body as UTF-8 text; more than `limit` bytes is PAYLOAD_TOO_LARGE. */
export async function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const raw = await readRawBody(
    req,
    limit,
    () => new ReplyError(ErrorCode.PAYLOAD_TOO_LARGE, `request body is larger than ${limit} bytes`),
  );
  return raw.toString('utf8');
}
