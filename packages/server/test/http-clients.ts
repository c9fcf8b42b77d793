/**
 * Raw clients of the HTTP transports for tests: an SSE reader over fetch streaming (Node 20 has no
 * EventSource) that records every event, id and comment, and a long-polling client that keeps
 * its cursor. Both post commands like any client, to whichever base URL they are given.
 */
import type { Frame } from './helpers.js';

export interface SseEvent {
  readonly type: string;
  readonly data: string;
  /** The event's own id line, if it had one. */
  readonly id: string | undefined;
}

export interface HttpReply {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
}

async function reply(res: Response): Promise<HttpReply> {
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { text };
  }
  return { status: res.status, headers: res.headers, body };
}

/** POSTs command frames (objects, or raw text) to a connection through `base`. */
export async function postCommands(
  base: string,
  connection: string,
  frames: readonly unknown[] | string,
): Promise<HttpReply> {
  const body =
    typeof frames === 'string' ? frames : frames.map((f) => JSON.stringify(f)).join('\n');
  return reply(await fetch(`${base}/connections/${connection}/commands`, { method: 'POST', body }));
}

export class SseTestClient {
  readonly events: SseEvent[] = [];
  /** Every frame of every `message` event (one per data line). */
  readonly frames: Frame[] = [];
  comments = 0;
  /** The last id seen, as EventSource keeps it. */
  lastEventId: string | undefined;
  connection = '';
  closed: { code: number; reason: string } | undefined;
  ended = false;
  status = 0;
  headers: Headers | undefined;
  /** The body of a refused stream. */
  refusal: Record<string, unknown> | undefined;
  readonly #abort = new AbortController();
  readonly #waiters = new Set<() => void>();

  /** Opens `GET {base}/sse{query}`; resolves once the `connected` event (or a refusal) arrived. */
  static async open(
    base: string,
    query = '',
    headers: Record<string, string> = {},
  ): Promise<SseTestClient> {
    const c = new SseTestClient();
    const res = await fetch(`${base}/sse${query}`, { headers, signal: c.#abort.signal });
    c.status = res.status;
    c.headers = res.headers;
    if (res.status !== 200 || res.body === null) {
      c.refusal = (await reply(res)).body;
      c.ended = true;
      return c;
    }
    void c.#read(res.body);
    await c.until(() => c.connection !== '' || c.ended, 5000, 'the connected event');
    return c;
  }

  post(frames: readonly unknown[] | string, base?: string): Promise<HttpReply> {
    if (base === undefined) throw new Error('post needs a base URL');
    return postCommands(base, this.connection, frames);
  }

  messages(channel?: string): Frame[] {
    return this.frames.filter(
      (f) =>
        'message' in f &&
        f['reply'] === undefined &&
        (channel === undefined || f['channel'] === channel),
    );
  }

  async until(check: () => boolean, timeoutMs = 5000, what = 'events'): Promise<void> {
    if (check()) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(w);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; last: ${JSON.stringify(this.events.slice(-3))}`,
          ),
        );
      }, timeoutMs);
      const w = (): void => {
        if (!check()) return;
        clearTimeout(timer);
        this.#waiters.delete(w);
        resolve();
      };
      this.#waiters.add(w);
    });
  }

  /** Waits for the reply (or error) to request `id`. */
  async replyTo(id: string | number, timeoutMs = 5000): Promise<Frame> {
    await this.until(() => this.frames.some((f) => f['reply'] === id), timeoutMs, `reply ${id}`);
    return this.frames.find((f) => f['reply'] === id) as Frame;
  }

  close(): void {
    this.#abort.abort();
  }

  async #read(body: ReadableStream<Uint8Array>): Promise<void> {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let type = '';
    let data: string[] = [];
    let id: string | undefined;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let nl: number;
        while ((nl = buffer.indexOf('\n')) !== -1) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          if (line === '') {
            if (data.length > 0)
              this.#event({ type: type || 'message', data: data.join('\n'), id });
            type = '';
            data = [];
            id = undefined;
          } else if (line.startsWith(':')) {
            this.comments++;
            this.#notify();
          } else {
            const c = line.indexOf(':');
            const field = line.slice(0, c);
            const v = line.slice(c + 1).replace(/^ /, '');
            if (field === 'data') data.push(v);
            else if (field === 'event') type = v;
            else if (field === 'id') id = v;
          }
        }
      }
    } catch {
      // aborted or cut
    }
    this.ended = true;
    this.#notify();
  }

  #event(e: SseEvent): void {
    this.events.push(e);
    if (e.id !== undefined) this.lastEventId = e.id;
    if (e.type === 'connected') {
      this.connection = (JSON.parse(e.data) as { connection: string }).connection;
    } else if (e.type === 'close') {
      this.closed = JSON.parse(e.data) as { code: number; reason: string };
    } else if (e.type === 'message') {
      for (const line of e.data.split('\n')) this.frames.push(JSON.parse(line) as Frame);
    }
    this.#notify();
  }

  #notify(): void {
    for (const w of [...this.#waiters]) w();
  }
}

export class PollTestClient {
  readonly connection: string;
  cursor = 0;
  readonly frames: Frame[] = [];
  closed: { code: number; reason: string } | undefined;

  private constructor(connection: string) {
    this.connection = connection;
  }

  static async open(base: string, query = ''): Promise<PollTestClient> {
    const r = await reply(await fetch(`${base}/poll${query}`, { method: 'POST' }));
    if (r.status !== 200) throw new Error(`open failed: ${r.status} ${JSON.stringify(r.body)}`);
    return new PollTestClient(r.body['connection'] as string);
  }

  post(frames: readonly unknown[] | string, base: string): Promise<HttpReply> {
    return postCommands(base, this.connection, frames);
  }

  /**
   * Closes the connection (DELETE), as a client that leaves does. A poller left open is one the
   * node's stop waits for (it must collect its close) until the drain gives up, 10 s in tests.
   */
  async close(base: string): Promise<void> {
    const r = await fetch(`${base}/connections/${this.connection}`, { method: 'DELETE' });
    await r.arrayBuffer();
  }

  /** One poll through `base`; a 200 moves the cursor and records the frames. */
  async poll(
    base: string,
    options: { cursor?: number | string; wait?: number } = {},
  ): Promise<HttpReply> {
    const cursor = options.cursor ?? this.cursor;
    const wait = options.wait === undefined ? '' : `&wait=${options.wait}`;
    const r = await reply(await fetch(`${base}/poll/${this.connection}?cursor=${cursor}${wait}`));
    if (r.status === 200) {
      this.cursor = r.body['cursor'] as number;
      this.frames.push(...(r.body['frames'] as Frame[]));
      if (r.body['closed'] !== undefined) this.closed = r.body['closed'] as typeof this.closed;
    }
    return r;
  }

  /** Polls until `check` holds over the frames received. */
  async until(base: string, check: (frames: Frame[]) => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check(this.frames)) {
      if (Date.now() > deadline)
        throw new Error(`timed out; got ${JSON.stringify(this.frames.slice(-3))}`);
      const r = await this.poll(base, { wait: 500 });
      if (r.status !== 200) throw new Error(`poll failed: ${r.status} ${JSON.stringify(r.body)}`);
    }
  }

  messages(channel?: string): Frame[] {
    return this.frames.filter(
      (f) =>
        'message' in f &&
        f['reply'] === undefined &&
        (channel === undefined || f['channel'] === channel),
    );
  }
}
