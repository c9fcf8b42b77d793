/**
 * An incremental parser of the `text/event-stream` format (the HTML standard's "event stream
 * interpretation"): feed it decoded text as it arrives, it calls back once per complete event.
 * Pure: no I/O. Lines end with LF or CRLF (a lone CR, which Switchboard never sends, is not
 * treated as a line end).
 */

/** One dispatched event. `type` is `message` when the event named none. */
export interface SseEvent {
  readonly type: string;
  /** The event's data lines joined with '\n'. */
  readonly data: string;
}

export class SseParser {
  readonly #onEvent: (event: SseEvent) => void;
  readonly #onComment: () => void;
  #buffer = '';
  #type = '';
  #data: string[] = [];

  /** `onComment` is called for each comment line (servers send them as heartbeats). */
  constructor(onEvent: (event: SseEvent) => void, onComment: () => void = () => {}) {
    this.#onEvent = onEvent;
    this.#onComment = onComment;
  }

  push(chunk: string): void {
    const text = this.#buffer + chunk;
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl === -1) break;
      const end = nl > start && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      this.#line(text.slice(start, end));
      start = nl + 1;
    }
    this.#buffer = start === 0 ? text : text.slice(start);
  }

  #line(line: string): void {
    if (line === '') {
      if (this.#data.length > 0) {
        const event = {
          type: this.#type === '' ? 'message' : this.#type,
          data: this.#data.join('\n'),
        };
        this.#data = [];
        this.#type = '';
        this.#onEvent(event);
      }
      this.#type = '';
      return;
    }
    const colon = line.indexOf(':');
    if (colon === 0) {
      this.#onComment();
      return;
    }
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data.push(value);
    else if (field === 'event') this.#type = value;
    // `id` and `retry` serve EventSource's own reconnects; the SDK resumes by itself.
  }
}
