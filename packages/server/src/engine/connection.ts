/**
 * The edge's view of one client connection, whatever carries it (WebSocket, SSE or long-polling;
 * uWebSockets.js later). Nothing below the edge knows which one it is.
 */
import type { Sink } from '../hub.js';

export type TransportName = 'websocket' | 'sse' | 'long-polling';

export interface Connection extends Sink {
  readonly transport: TransportName;
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
  onClose(): void;
}
