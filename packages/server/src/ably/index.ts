/**
 * The Ably protocol dialect: the official `ably` SDK's WebSocket on `/` (and, in rest.ts, its REST
 * calls) mapped onto the same Node, Hub and Broker as the native protocol. docs/ably.md.
 */
import type { Connection, Dialect, RequestInfo } from '../engine/connection.js';
import type { AblyContext } from './context.js';
import { AblySession } from './session.js';

export { AblyAuth } from './auth.js';
export { AblyContext } from './context.js';

export function ablyDialect(ctx: AblyContext): Dialect {
  return {
    path: '/',
    accept: (conn: Connection, req: RequestInfo) => new AblySession(ctx, conn, req),
  };
}
