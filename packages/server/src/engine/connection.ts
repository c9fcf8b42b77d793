/**
 * The edge's view of one client connection, whatever carries it (WebSocket, SSE or long-polling;
 * uWebSockets.js later). Nothing below the edge knows which one it is.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Sink } from '../hub.js';

/**
 * What admission and sessions read from the request that opened a connection; node:http's
 * IncomingMessage is one, and the uWebSockets.js engine builds one from its request.
 */
export interface RequestInfo {
  readonly url?: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly socket: { readonly remoteAddress?: string | undefined };
}

export type TransportName = 'websocket' | 'sse' | 'long-polling';

export interface Connection extends Sink {
  readonly transport: TransportName;
  /** Bytes accepted for the client and not yet taken by its socket (or, long-polling, its polls). */
  readonly queuedBytes: number;
  /** Sends a control frame (reply, error); same queue and limits as message frames. */
  sendText(frame: string): void;
  /** Ends the connection with a close code and a reason of at most 123 bytes. */
  close(code: number, reason: string): void;
  /**
   * Flow control for a client over its command rate: stop reading its frames for `ms` (frames
   * already received are still handled). Optional: transports without a stream to pause skip it.
   */
  pauseReading?(ms: number): void;
}

/** What the edge calls as frames arrive; implemented by Session. */
export interface ConnectionHandler {
  onFrame(text: string): void;
  /** A frame the engine could not take: its inbox for the connection was full. */
  onDropped?(text: string): void;
  onClose(): void;
}
