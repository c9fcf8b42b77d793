/**
 * The Ably protocol dialect: the official `ably` SDK's WebSocket on `/` (and, in rest.ts, its REST
 * calls) mapped onto the same Node, Hub and Broker as the native protocol. docs/ably.md.
 */
import type { Connection, ConnectionHandler, Dialect, RequestInfo } from '../engine/transport.js';
import type { AblyContext } from './context.js';
import { AblySession } from './session.js';

export { AblyAuth } from './auth.js';
export { AblyContext } from './context.js';
export { AblyRest } from './rest.js';

/**
 * The SDK's WebSocket connectivity check (`wsConnectivityCheckUrl`): it only needs the socket to
 * open. Closed at once, no session.
 */
export const WS_CHECK_PATH = '/ws-up';

export function wsCheck(conn: Connection): ConnectionHandler {
  conn.close(1000, 'up');
  return { onFrame: () => {}, onClose: () => {} };
}

export function ablyDialect(ctx: AblyContext): Dialect {
  return {
    path: '/',
    accept: (conn: Connection, req: RequestInfo) => new AblySession(ctx, conn, req),
  };
}
