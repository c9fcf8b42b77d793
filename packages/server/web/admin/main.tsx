/**
 * The admin SPA at /admin: asks GET /v1/admin/session who we are, shows the login form when
 * nobody, and otherwise routes on the URL fragment (#/channels/...) so the server serves only
 * /admin. Everything it shows comes from the admin API (docs/operations.md, Admin API).
 */
import { render, type ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ErrorCode } from '@switchboard/protocol';
import { ApiError, api, setCsrf, whenUnauthenticated, type Session } from './api';
import { ChannelPage, ChannelsPage } from './channels';
import { ErrorsPage, LatencyPage, RevokePage } from './misc';
import { OverviewPage } from './overview';
import { Problem, message } from './ui';
import './admin.css';

type Route =
  | { page: 'overview' }
  | { page: 'channels' }
  | { page: 'channel'; channel: string }
  | { page: 'latency' }
  | { page: 'errors' }
  | { page: 'revoke' };

function route(hash: string): Route {
  const path = hash.replace(/^#\/?/, '');
  if (path.startsWith('channels/')) {
    try {
      return { page: 'channel', channel: decodeURIComponent(path.slice('channels/'.length)) };
    } catch {
      return { page: 'channels' };
    }
  }
  if (path === 'channels' || path === 'latency' || path === 'errors' || path === 'revoke')
    return { page: path };
  return { page: 'overview' };
}

const NAV: readonly { href: string; label: string; pages: readonly Route['page'][] }[] = [
  { href: '#/', label: 'Overview', pages: ['overview'] },
  { href: '#/channels', label: 'Channels', pages: ['channels', 'channel'] },
  { href: '#/latency', label: 'Latency', pages: ['latency'] },
  { href: '#/errors', label: 'Errors', pages: ['errors'] },
  { href: '#/revoke', label: 'Revoke', pages: ['revoke'] },
];

const TITLES: Readonly<Record<Route['page'], string>> = {
  overview: 'Overview',
  channels: 'Channels',
  channel: 'Channel',
  latency: 'Latency',
  errors: 'Errors',
  revoke: 'Revoke',
};

function Logo() {
  return (
    <svg class="logo" viewBox="0 0 32 32" aria-hidden="true">
      <circle cx="6" cy="16" r="4" />
      <circle cx="26" cy="6" r="3" />
      <circle cx="26" cy="16" r="3" />
      <circle cx="26" cy="26" r="3" />
      <path d="M10 16 L23 6 M10 16 L23 16 M10 16 L23 26" />
    </svg>
  );
}

type Phase =
  | { kind: 'loading' }
  | { kind: 'off' }
  | { kind: 'failed'; error: string }
  | { kind: 'login'; login: boolean }
  | { kind: 'in'; session: Session };

function App() {
  const [phase, setPhase] = useState<Phase>({ kind: 'loading' });
  const [r, setRoute] = useState<Route>(route(location.hash));
  const check = (): void => {
    api<Session>('/v1/admin/session')
      .then((s) => {
        setCsrf(s.csrf);
        setPhase(s.authenticated ? { kind: 'in', session: s } : { kind: 'login', login: s.login });
      })
      .catch((err: unknown) => {
        if (err instanceof ApiError && err.status === 404) setPhase({ kind: 'off' });
        else setPhase({ kind: 'failed', error: message(err) });
      });
  };
  useEffect(() => {
    check();
    whenUnauthenticated(() => setPhase({ kind: 'login', login: true }));
    const onHash = (): void => setRoute(route(location.hash));
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);
  useEffect(() => {
    document.title =
      phase.kind === 'in'
        ? `${r.page === 'channel' ? r.channel : TITLES[r.page]} · Switchboard admin`
        : 'Switchboard admin';
  }, [r, phase.kind]);

  if (phase.kind === 'loading') return <p class="boot">Loading the admin…</p>;
  if (phase.kind === 'off')
    return (
      <Centered title="The admin is off on this node">
        <p>
          Start the node with <code>--admin</code> (or <code>admin: true</code> in the config) and
          an admin password or an admin API key. See <a href="/docs/operations.md">operations</a>.
        </p>
      </Centered>
    );
  if (phase.kind === 'failed')
    return (
      <Centered title="The admin could not load">
        <Problem error={phase.error} />
        <button type="button" onClick={check}>
          Try again
        </button>
      </Centered>
    );
  if (phase.kind === 'login')
    return (
      <Login
        enabled={phase.login}
        onIn={(csrf) => {
          setCsrf(csrf);
          check();
        }}
      />
    );
  const logout = (): void => {
    api('/v1/admin/logout', {})
      .catch(() => undefined)
      .finally(() => {
        setCsrf(undefined);
        check();
      });
  };
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="#/">
          <Logo />
          <span>
            Switchboard <b>admin</b>
          </span>
        </a>
        <nav aria-label="Admin pages">
          <ul>
            {NAV.map((n) => (
              <li key={n.href}>
                <a href={n.href} aria-current={n.pages.includes(r.page) ? 'page' : undefined}>
                  {n.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <a href="/">Front page</a>
          {phase.session.via === 'session' && (
            <button type="button" onClick={logout}>
              Log out
            </button>
          )}
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {phase.session.via === 'open' && (
          <p class="warn" role="note">
            Open admin: no authentication is configured on this node, anyone who reaches it has this
            page.
          </p>
        )}
        {r.page === 'overview' && <OverviewPage />}
        {r.page === 'channels' && <ChannelsPage />}
        {r.page === 'channel' && <ChannelPage channel={r.channel} />}
        {r.page === 'latency' && <LatencyPage />}
        {r.page === 'errors' && <ErrorsPage />}
        {r.page === 'revoke' && <RevokePage />}
      </main>
    </>
  );
}

function Centered(p: { title: string; children: ComponentChildren }) {
  return (
    <main class="centered" id="main">
      <div class="panel">
        <div class="brand">
          <Logo />
          <span>
            Switchboard <b>admin</b>
          </span>
        </div>
        <h1>{p.title}</h1>
        {p.children}
      </div>
    </main>
  );
}

function Login({ enabled, onIn }: { enabled: boolean; onIn: (csrf: string) => void }) {
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);
  return (
    <Centered title="Log in">
      {!enabled ? (
        <p>
          Password login is off on this node. Set <code>adminPassword</code> or{' '}
          <code>adminPasswordHash</code>, or call the admin API with an admin API key.
        </p>
      ) : (
        <form
          class="form"
          id="login"
          onSubmit={(e) => {
            e.preventDefault();
            setBusy(true);
            setError(undefined);
            api<{ csrf: string }>('/v1/admin/login', { password })
              .then((r) => onIn(r.csrf))
              .catch((err: unknown) => {
                setPassword('');
                setError(
                  err instanceof ApiError && err.code === ErrorCode.ADMIN_LOCKED_OUT
                    ? `Locked out: ${err.message}`
                    : message(err),
                );
                input.current?.focus();
              })
              .finally(() => setBusy(false));
          }}
        >
          <label for="password">Admin password</label>
          <input
            id="password"
            ref={input}
            type="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
          <div class="actions">
            <button type="submit" class="primary" disabled={busy}>
              Log in
            </button>
          </div>
          <Problem error={error} />
        </form>
      )}
    </Centered>
  );
}

const root = document.getElementById('app');
if (root !== null) {
  root.textContent = '';
  render(<App />, root);
}
