/** The channel list (prefix search, cursor pages) and one channel: info, presence, tail, publish. */
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { ErrorCode } from '@switchboard/protocol';
import {
  ApiError,
  api,
  enc,
  fromHistory,
  type ChannelInfo,
  type ChannelPage,
  type ChannelRow,
  type HistoryPage,
  type PresencePage,
  type TailMessage,
} from './api';
import { Card, Problem, Stat, message, num, time, usePoll } from './ui';

const PAGE = 25;
/** Messages the tail keeps on screen; older ones are dropped from the top. */
const KEEP = 1000;

export function ChannelsPage() {
  const [prefix, setPrefix] = useState('');
  const [query, setQuery] = useState('');
  // The cursors of the pages before this one, to go back.
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors[cursors.length - 1];
  useEffect(() => {
    const t = setTimeout(() => {
      setQuery(prefix.trim());
      setCursors([undefined]);
    }, 250);
    return () => clearTimeout(t);
  }, [prefix]);
  const { data, error } = usePoll(
    () =>
      api<ChannelPage>(
        `/v1/admin/channels?limit=${PAGE}&prefix=${enc(query)}${cursor !== undefined ? `&cursor=${enc(cursor)}` : ''}`,
      ),
    1000,
    [query, cursor],
  );
  const rows = data?.channels ?? [];
  // Columns the listing has (the deployment directory gives occupancy; a bare node less).
  const has = (k: keyof ChannelRow): boolean => rows.some((c) => typeof c[k] === 'number');
  const cols = (
    [
      ['connections', 'Connections'],
      ['presenceMembers', 'Presence members'],
      ['publishersLastMinute', 'Publishers (last min)'],
      ['messagesPerSec', 'Messages /s'],
    ] as const
  ).filter(([k]) => has(k));
  return (
    <>
      <h1>Channels</h1>
      <form class="toolbar" role="search" onSubmit={(e) => e.preventDefault()}>
        <label for="prefix">Channel name starts with</label>
        <input
          id="prefix"
          type="search"
          value={prefix}
          placeholder="e.g. chat."
          autocomplete="off"
          spellcheck={false}
          onInput={(e) => setPrefix(e.currentTarget.value)}
        />
      </form>
      <Problem error={error} />
      <Card title={query === '' ? 'Live channels' : `Live channels starting with “${query}”`}>
        {data !== undefined && data.channels.length === 0 ? (
          <p class="empty">No channel with a subscriber{query !== '' && ' matches'}.</p>
        ) : (
          <div class="scroll">
            <table id="channel-list">
              <thead>
                <tr>
                  <th scope="col">Channel</th>
                  <th scope="col" class="n">
                    Subscribers
                  </th>
                  {cols.map(([k, label]) => (
                    <th scope="col" class="n" key={k}>
                      {label}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {rows.map((c) => (
                  <tr key={c.channel}>
                    <th scope="row">
                      <a class="mono" href={`#/channels/${enc(c.channel)}`}>
                        {c.channel}
                      </a>
                    </th>
                    <td class="n">{num(c.subscribers)}</td>
                    {cols.map(([k]) => (
                      <td class="n" key={k}>
                        {num(c[k])}
                      </td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <nav class="pager" aria-label="Pages of channels">
          <button
            type="button"
            disabled={cursors.length < 2}
            onClick={() => setCursors((c) => c.slice(0, -1))}
          >
            ← Previous
          </button>
          <span>Page {cursors.length}</span>
          <button
            type="button"
            disabled={data?.next === null || data?.next === undefined}
            onClick={() => data?.next != null && setCursors((c) => [...c, data.next ?? undefined])}
          >
            Next →
          </button>
        </nav>
      </Card>
    </>
  );
}

export function ChannelPage({ channel }: { channel: string }) {
  const info = usePoll(() => api<ChannelInfo>(`/v1/admin/channels/${enc(channel)}`), 2000, [
    channel,
  ]);
  const i = info.data;
  return (
    <>
      <p class="crumbs">
        <a href="#/channels">Channels</a> /
      </p>
      <h1 class="mono">{channel}</h1>
      <Problem error={info.error} />
      {i !== undefined && (
        <dl class="stats" aria-label="This channel">
          <Stat
            label="Subscribers"
            value={num(i.subscribers)}
            hint={`on ${i.nodes} node${i.nodes === 1 ? '' : 's'}`}
          />
          <Stat label="Messages" value={num(i.messagesPerSec)} hint="/s" />
          {i.occupancy !== undefined && (
            <>
              <Stat label="Presence members" value={num(i.occupancy.presenceMembers)} />
              <Stat
                label="Publishers"
                value={num(i.occupancy.publishersLastMinute)}
                hint="last min"
              />
            </>
          )}
          <Stat label="Last offset" value={i.last === null ? '–' : num(i.last.offset)} />
          <Stat label="Last message" value={time(i.last?.at)} />
        </dl>
      )}
      <Tail channel={channel} />
      <div class="grid2">
        <Publish channel={channel} />
        {i !== undefined && (i.presence ? <Presence channel={channel} /> : <PresenceOff />)}
      </div>
    </>
  );
}

type TailState = 'connecting' | 'live' | 'reconnecting' | 'closed';

function Tail({ channel }: { channel: string }) {
  const [messages, setMessages] = useState<readonly TailMessage[]>([]);
  const [held, setHeld] = useState<readonly TailMessage[]>([]);
  const [paused, setPaused] = useState(false);
  const [pretty, setPretty] = useState(false);
  const [filter, setFilter] = useState('');
  const [state, setState] = useState<TailState>('connecting');
  const [error, setError] = useState<string | undefined>(undefined);
  const pausedRef = useRef(paused);
  pausedRef.current = paused;
  const list = useRef<HTMLOListElement>(null);
  const stick = useRef(true);

  useEffect(() => {
    setMessages([]);
    setHeld([]);
    setState('connecting');
    let last = -1;
    let ready = false;
    let early: TailMessage[] = [];
    const add = (batch: readonly TailMessage[]): void => {
      const fresh = batch.filter((m) => m.offset > last);
      if (fresh.length === 0) return;
      last = fresh[fresh.length - 1]?.offset ?? last;
      const keep = (a: readonly TailMessage[]): readonly TailMessage[] => {
        const all = [...a, ...fresh];
        return all.length > KEEP ? all.slice(all.length - KEEP) : all;
      };
      if (pausedRef.current) setHeld(keep);
      else setMessages(keep);
    };
    // The tail first, so nothing published while the history loads falls between the two.
    const source = new EventSource(`/v1/admin/tail/${enc(channel)}`);
    source.onmessage = (e: MessageEvent<string>) => {
      const m = JSON.parse(e.data) as TailMessage;
      if (ready) add([m]);
      else early.push(m);
    };
    // A reconnect sends the last message's `id:` back as Last-Event-ID and the tail resumes right
    // after it; `recovered: false` means the channel's recovery window no longer reached back.
    source.addEventListener('subscribed', (e: Event) => {
      setState('live');
      const d = JSON.parse((e as MessageEvent<string>).data) as { recovered?: boolean };
      if (d.recovered === false)
        setError('Reconnected after a gap: messages published meanwhile are not shown');
    });
    source.addEventListener('close', (e: Event) => {
      const d = (e as MessageEvent<string>).data;
      try {
        const c = JSON.parse(d) as { code: number; reason: string };
        setError(`The server closed the tail: ${c.reason} (code ${c.code})`);
      } catch {
        setError('The server closed the tail');
      }
    });
    source.onerror = () =>
      setState(source.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
    api<HistoryPage>(`/v1/admin/channels/${enc(channel)}/history?limit=100`)
      .then((h) => add(h.messages.map(fromHistory)))
      .catch((err: unknown) => setError(`History: ${message(err)}`))
      .finally(() => {
        ready = true;
        add(early);
        early = [];
      });
    return () => source.close();
  }, [channel]);

  useEffect(() => {
    if (!paused && held.length > 0) {
      setMessages((m) => [...m, ...held].slice(-KEEP));
      setHeld([]);
    }
  }, [paused, held]);

  useEffect(() => {
    const el = list.current;
    if (el !== null && stick.current) el.scrollTop = el.scrollHeight;
  }, [messages, pretty, filter]);

  const shown = useMemo(() => {
    const f = filter.trim().toLowerCase();
    if (f === '') return messages;
    return messages.filter((m) =>
      `${m.name ?? ''} ${JSON.stringify(m.data)}`.toLowerCase().includes(f),
    );
  }, [messages, filter]);

  return (
    <Card title="Live tail">
      <div class="toolbar">
        <span class={`pill ${state === 'live' ? 'ok' : 'bad'}`} role="status" id="tail-state">
          {state}
        </span>
        <button type="button" aria-pressed={paused} onClick={() => setPaused((p) => !p)}>
          {paused ? `Resume${held.length > 0 ? ` (${held.length} new)` : ''}` : 'Pause'}
        </button>
        <label class="check">
          <input
            type="checkbox"
            checked={pretty}
            onChange={(e) => setPretty(e.currentTarget.checked)}
          />
          Pretty JSON
        </label>
        <label for="tail-filter" class="sr-only">
          Filter messages
        </label>
        <input
          id="tail-filter"
          type="search"
          placeholder="Filter messages"
          value={filter}
          onInput={(e) => setFilter(e.currentTarget.value)}
        />
        <button type="button" onClick={() => setMessages([])}>
          Clear
        </button>
        <span class="muted" id="tail-count">
          {shown.length === messages.length
            ? `${messages.length} messages`
            : `${shown.length} of ${messages.length} messages`}
        </span>
      </div>
      <Problem error={error} />
      <ol
        class="tail"
        id="tail"
        ref={list}
        tabIndex={0}
        aria-label={`Messages of ${channel}, history then live`}
        onScroll={(e) => {
          const el = e.currentTarget;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
        }}
      >
        {shown.length === 0 && <li class="empty">Waiting for messages…</li>}
        {shown.map((m) => (
          <li key={`${m.epoch}:${m.offset}`} data-offset={m.offset}>
            <span class="meta">
              <span class="offset">#{m.offset}</span>
              <time>{time(m.at)}</time>
              {m.name !== undefined && <span class="name">{m.name}</span>}
            </span>
            <pre class={pretty ? 'json pretty' : 'json'}>
              {JSON.stringify(m.data, null, pretty ? 2 : undefined)}
            </pre>
          </li>
        ))}
      </ol>
    </Card>
  );
}

function Publish({ channel }: { channel: string }) {
  const [data, setData] = useState('{"text": "hello"}');
  const [name, setName] = useState('');
  const [result, setResult] = useState<string | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  return (
    <Card title="Publish">
      <form
        class="form"
        onSubmit={(e) => {
          e.preventDefault();
          let value: unknown;
          try {
            value = JSON.parse(data);
          } catch {
            // Not JSON: sent as the string typed.
            value = data;
          }
          setBusy(true);
          setError(undefined);
          api<{ messages: { offset: number }[] }>('/v1/admin/publish', {
            channel,
            data: value,
            ...(name.trim() !== '' && { name: name.trim() }),
          })
            .then((r) => setResult(`Published at offset ${r.messages[0]?.offset ?? '?'}`))
            .catch((err: unknown) => {
              setResult(undefined);
              setError(message(err));
            })
            .finally(() => setBusy(false));
        }}
      >
        <label for="pub-data">Data (JSON, or text)</label>
        <textarea
          id="pub-data"
          rows={4}
          spellcheck={false}
          value={data}
          onInput={(e) => setData(e.currentTarget.value)}
        />
        <label for="pub-name">Name (optional)</label>
        <input id="pub-name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        <div class="actions">
          <button type="submit" class="primary" disabled={busy}>
            Publish to {channel}
          </button>
          {result !== undefined && (
            <span class="ok-text" role="status" id="pub-result">
              {result}
            </span>
          )}
        </div>
        <Problem error={error} />
      </form>
    </Card>
  );
}

/** Presence not enabled for the namespace: asking again will not change that. */
const off = (err: unknown): boolean =>
  err instanceof ApiError && err.code === ErrorCode.PRESENCE_DISABLED;

function PresenceOff() {
  return (
    <Card title="Presence">
      <p class="empty">
        Presence is off in this channel’s namespace (<code>namespaces.&lt;ns&gt;.presence</code>).
      </p>
    </Card>
  );
}

function Presence({ channel }: { channel: string }) {
  const [presenceOff, setPresenceOff] = useState(false);
  const { data, error } = usePoll(
    () => api<PresencePage>(`/v1/admin/channels/${enc(channel)}/presence?limit=100`),
    2000,
    [channel],
    (err) => {
      const final = off(err);
      setPresenceOff(final);
      return final;
    },
  );
  return (
    <Card title="Presence">
      {presenceOff ? (
        <p class="empty">
          Presence is off in this channel’s namespace (<code>namespaces.&lt;ns&gt;.presence</code>
          ).
        </p>
      ) : (
        <Problem error={error} />
      )}
      {data !== undefined && data.members.length === 0 && (
        <p class="empty">Nobody has entered presence.</p>
      )}
      {data !== undefined && data.members.length > 0 && (
        <div class="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Client</th>
                <th scope="col">Connection</th>
                <th scope="col">Data</th>
              </tr>
            </thead>
            <tbody>
              {data.members.map((m) => (
                <tr key={`${m.clientId}\0${m.connectionId}`}>
                  <th scope="row" class="mono">
                    {m.clientId}
                  </th>
                  <td class="mono">{m.connectionId}</td>
                  <td class="mono">{m.data === undefined ? '' : JSON.stringify(m.data)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {data.more && <p class="muted">Showing the first {data.members.length}.</p>}
        </div>
      )}
    </Card>
  );
}
