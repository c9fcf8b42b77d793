/**
 * The long-polling transport as a WebSocket-shaped object: `POST /poll` opens a connection, then
 * one `GET /poll/{id}?cursor=n` at a time brings the frames after the cursor (the server keeps them
 * until a later cursor acknowledges them, so a lost response is simply fetched again); commands go
 * by POST. For networks whose proxies buffer streaming responses.
 */
import { errorMessage, failure, httpUrl, HttpSocket, type FetchLike } from './http-transport.js';

interface PollBody {
  readonly cursor?: unknown;
  readonly frames?: unknown;
  readonly closed?: { readonly code?: unknown; readonly reason?: unknown };
}

export class PollingSocket extends HttpSocket {
  readonly #waitMs: number;

  /** `waitMs`: how long a poll may wait for frames (the server caps it at its ping interval). */
  constructor(url: string, fetch: FetchLike, waitMs: number) {
    super(url, fetch);
    this.#waitMs = waitMs;
    void this.#run();
  }

  async #run(): Promise<void> {
    const signal = this.abort.signal;
    let cursor: number;
    let id: string;
    try {
      const res = await this.fetch(httpUrl(this.url, '/poll'), { method: 'POST', signal });
      if (!res.ok) {
        this.refused(res);
        this.end(1006, `long-polling refused: ${await failure(res)}`);
        return;
      }
      const info = (await res.json()) as { connection?: unknown; cursor?: unknown };
      if (typeof info.connection !== 'string' || typeof info.cursor !== 'number') {
        this.end(1006, 'long-polling opened without a connection id');
        return;
      }
      id = info.connection;
      cursor = info.cursor;
    } catch (err) {
      this.end(1006, `cannot open long-polling: ${errorMessage(err)}`);
      return;
    }
    if (this.done) return;
    this.opened(id);
    while (!this.done) {
      let body: PollBody;
      try {
        const res = await this.fetch(
          httpUrl(this.url, `/poll/${id}`, { cursor: String(cursor), wait: String(this.#waitMs) }),
          { signal },
        );
        if (!res.ok) {
          this.end(1006, `poll failed: ${await failure(res)}`);
          return;
        }
        body = (await res.json()) as PollBody;
      } catch (err) {
        this.end(1006, `poll failed: ${errorMessage(err)}`);
        return;
      }
      if (this.done) return;
      if (typeof body.cursor === 'number') cursor = body.cursor;
      const frames = Array.isArray(body.frames) ? (body.frames as unknown[]) : [];
      // Even an empty answer proves the link alive; an empty message carries no frame.
      this.onmessage?.({ data: frames.map((f) => JSON.stringify(f)).join('\n') });
      if (body.closed !== undefined) {
        const { code, reason } = body.closed;
        this.end(
          typeof code === 'number' ? code : 1006,
          typeof reason === 'string' ? reason : 'closed',
        );
        return;
      }
    }
  }
}
