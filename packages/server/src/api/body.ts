import type { IncomingMessage } from 'node:http';
import { ErrorCode } from '@switchboard/protocol';
import { ReplyError } from '../errors.js';

/**
 * Reads a request body as UTF-8, refusing more than `limit` bytes (PAYLOAD_TOO_LARGE) without
 * buffering past it. Shared by the REST API and the HTTP transports.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const tooLarge = (): ReplyError =>
      new ReplyError(ErrorCode.PAYLOAD_TOO_LARGE, `request body is larger than ${limit} bytes`);
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
      if (!failed) resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
}
