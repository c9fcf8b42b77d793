/**
 * A scripted WebSocket for unit tests: records what the SDK sends and lets the test play the
 * server (open, frames, close). No I/O.
 */
import type { WebSocketConstructor, WebSocketLike } from '../src/index.js';

export type Frame = Record<string, unknown>;

export class FakeSocket implements WebSocketLike {
  readonly url: string;
  readonly protocols: string | string[] | undefined;
  protocol = 'switchboard.v1';
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { readonly data: unknown }) => void) | null = null;
  onclose: ((event: { readonly code: number; readonly reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: string[] = [];
  closedWith: number | undefined;
  terminated = false;

  constructor(url: string, protocols?: string | string[]) {
    this.url = url;
    this.protocols = protocols;
  }

  send(data: string): void {
    this.sent.push(data);
  }

  close(code?: number): void {
    this.closedWith = code ?? 1005;
  }

  terminate(): void {
    this.terminated = true;
  }

  /** The server accepts the connection. */
  open(): void {
    this.onopen?.({});
  }

  /** The server sends these frames in one WebSocket message, separated by '\n'. */
  push(...frames: Frame[]): void {
    this.onmessage?.({ data: frames.map((f) => JSON.stringify(f)).join('\n') });
  }

  /** The server (or the network) closes the connection. */
  drop(code = 1006, reason = ''): void {
    this.onclose?.({ code, reason });
  }

  /** The commands the SDK sent, decoded. */
  commands(action?: string): Frame[] {
    return this.sent
      .map((s) => JSON.parse(s) as Frame)
      .filter((f) => action === undefined || f['action'] === action);
  }

  /** The last command with this action. */
  last(action: string): Frame {
    const all = this.commands(action);
    const f = all[all.length - 1];
    if (f === undefined)
      throw new Error(`no ${action} command sent; sent: ${this.sent.join(' | ')}`);
    return f;
  }

  /** Replies ok to the last `action` command, with extra fields. */
  reply(action: string, fields: Frame = {}): void {
    this.push({ reply: this.last(action)['id'], ok: true, ...fields });
  }
}

/** A WebSocket constructor whose instances are collected in `sockets`, newest last. */
export function fakeWebSocket(): { WebSocket: WebSocketConstructor; sockets: FakeSocket[] } {
  const sockets: FakeSocket[] = [];
  class Recorded extends FakeSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      sockets.push(this);
    }
  }
  return { WebSocket: Recorded, sockets };
}

/** A message push frame. */
export function push(
  channel: string,
  offset: number | undefined,
  epoch = 'E1',
  data: unknown = offset,
): Frame {
  const f: Frame = { channel, message: data, id: `m${String(offset)}`, timestamp: 1 };
  if (offset !== undefined) {
    f['offset'] = offset;
    f['epoch'] = epoch;
  }
  return f;
}

export const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));
