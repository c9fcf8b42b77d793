/** The latency histogram, the last errors and refusals, and revoking a user or a token. */
import { useState } from 'preact/hooks';
import { api, type ErrorEntry, type Latency } from './api';
import { Card, Problem, Stat, message, num, time, usePoll } from './ui';

function ms(seconds: number): string {
  const v = seconds * 1000;
  return v < 1 ? `${num(v * 1000)} µs` : v < 1000 ? `${num(v)} ms` : `${num(seconds)} s`;
}

/** The smallest bucket bound under which a fraction `q` of the observations fall. */
function quantile(h: Latency, q: number): string {
  if (h.count === 0) return '–';
  const want = h.count * q;
  const b = h.buckets.find((x) => x.count >= want);
  return b === undefined ? '–' : b.le === '+Inf' ? 'over the last bucket' : `≤ ${ms(b.le)}`;
}

export function LatencyPage() {
  const { data: h, error } = usePoll(() => api<Latency>('/v1/admin/latency'), 2000);
  const bars =
    h?.buckets.map((b, i) => ({
      label: b.le === '+Inf' ? '> last' : `≤ ${ms(b.le)}`,
      count: b.count - (i === 0 ? 0 : (h.buckets[i - 1]?.count ?? 0)),
    })) ?? [];
  const max = Math.max(1, ...bars.map((b) => b.count));
  const W = 40;
  const H = 180;
  return (
    <>
      <h1>Publish-to-deliver latency</h1>
      <p class="muted">
        From the moment a message gets its offset to its write to a subscriber’s socket, on every
        node (<code>switchboard_delivery_latency_seconds</code>).
      </p>
      <Problem error={error} />
      {h !== undefined && (
        <>
          <dl class="stats" aria-label="Latency summary">
            <Stat label="Deliveries" value={num(h.count)} />
            <Stat label="Mean" value={h.count === 0 ? '–' : ms(h.sum / h.count)} />
            <Stat label="p50" value={quantile(h, 0.5)} />
            <Stat label="p99" value={quantile(h, 0.99)} />
          </dl>
          <Card title="Histogram">
            {bars.length === 0 ? (
              <p class="empty">No deliveries yet.</p>
            ) : (
              <div class="scroll">
                <svg
                  class="histogram"
                  viewBox={`0 0 ${bars.length * W} ${H + 40}`}
                  role="img"
                  aria-label="Deliveries per latency bucket"
                >
                  {bars.map((b, i) => {
                    const hgt = b.count === 0 ? 0 : Math.max(2, (b.count / max) * H);
                    return (
                      <g key={b.label}>
                        <title>{`${b.label}: ${b.count}`}</title>
                        <rect x={i * W + 4} y={H - hgt} width={W - 8} height={hgt} rx={3} />
                        <text x={i * W + W / 2} y={H + 14} class="tick">
                          {b.label.replace('≤ ', '')}
                        </text>
                        {b.count > 0 && (
                          <text x={i * W + W / 2} y={H - hgt - 4} class="count">
                            {num(b.count)}
                          </text>
                        )}
                      </g>
                    );
                  })}
                </svg>
              </div>
            )}
          </Card>
        </>
      )}
    </>
  );
}

export function ErrorsPage() {
  const { data, error } = usePoll(
    () => api<{ errors: ErrorEntry[] }>('/v1/admin/errors?limit=200'),
    2000,
  );
  return (
    <>
      <h1>Errors and refusals</h1>
      <p class="muted">
        The latest of every node: rate limits, auth failures, slow consumers closed. Codes are in{' '}
        <a href="/docs/errors.md">docs/errors.md</a>.
      </p>
      <Problem error={error} />
      <Card title="Latest">
        {data !== undefined && data.errors.length === 0 ? (
          <p class="empty">Nothing went wrong lately.</p>
        ) : (
          <div class="scroll">
            <table id="errors">
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  <th scope="col">Code</th>
                  <th scope="col">What</th>
                  <th scope="col">Node</th>
                  <th scope="col">Channel / address</th>
                </tr>
              </thead>
              <tbody>
                {(data?.errors ?? []).map((e, i) => (
                  <tr key={`${e.at}-${e.node}-${i}`}>
                    <td>{time(e.at)}</td>
                    <td>
                      <span class="code">{e.code}</span> <span class="mono small">{e.name}</span>
                    </td>
                    <td>{e.message}</td>
                    <td class="mono small">{e.node}</td>
                    <td class="mono small">{e.channel ?? e.address ?? ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Card>
    </>
  );
}

export function RevokePage() {
  const [kind, setKind] = useState<'user' | 'token'>('user');
  const [value, setValue] = useState('');
  const [result, setResult] = useState<string | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  return (
    <>
      <h1>Revoke</h1>
      <p class="muted">
        Revoking closes the connections it covers on every node at once, and refuses the tokens
        until they expire.
      </p>
      <Card title="Revoke a user or a token">
        <form
          class="form"
          onSubmit={(e) => {
            e.preventDefault();
            const v = value.trim();
            if (v === '') return;
            setBusy(true);
            setError(undefined);
            setResult(undefined);
            api<{ revoked: unknown }>('/v1/admin/revoke', { [kind]: v })
              .then((r) => setResult(`Revoked: ${JSON.stringify(r.revoked)}`))
              .catch((err: unknown) => setError(message(err)))
              .finally(() => setBusy(false));
          }}
        >
          <fieldset>
            <legend>What to revoke</legend>
            <label class="check">
              <input
                type="radio"
                name="kind"
                checked={kind === 'user'}
                onChange={() => setKind('user')}
              />
              Every token of a user (its <code>sub</code>)
            </label>
            <label class="check">
              <input
                type="radio"
                name="kind"
                checked={kind === 'token'}
                onChange={() => setKind('token')}
              />
              One token (paste it)
            </label>
          </fieldset>
          <label for="revoke-value">{kind === 'user' ? 'User id' : 'Token'}</label>
          {kind === 'user' ? (
            <input
              id="revoke-value"
              value={value}
              autocomplete="off"
              onInput={(e) => setValue(e.currentTarget.value)}
            />
          ) : (
            <textarea
              id="revoke-value"
              rows={3}
              value={value}
              spellcheck={false}
              onInput={(e) => setValue(e.currentTarget.value)}
            />
          )}
          <div class="actions">
            <button type="submit" class="danger" disabled={busy || value.trim() === ''}>
              Revoke
            </button>
            {result !== undefined && (
              <span class="ok-text" role="status" id="revoke-result">
                {result}
              </span>
            )}
          </div>
          <Problem error={error} />
        </form>
      </Card>
    </>
  );
}
