/**
 * The front page's script: fills in what GET /v1/info says about this node and writes the
 * snippets with this node's own address, so what a visitor copies works as it is.
 */

/** GET /v1/info, as src/web/front-page.ts answers it. */
interface NodeInfo {
  readonly version: string;
  readonly nodeId: string;
  readonly engine: string;
  readonly broker: string;
  readonly startedAt: string;
  readonly uptimeMs: number;
  readonly auth: boolean;
  readonly connections: number;
  readonly channels: number;
  readonly links: { readonly demo: string | null; readonly admin: string | null };
}

const $ = (id: string): HTMLElement => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} missing`);
  return el;
};

/** The browser snippet: pasted into a console, or a `<script type="module">`. */
export function browserSnippet(origin: string, auth: boolean): string {
  const ws = origin.replace(/^http/, 'ws');
  return [
    `const { Switchboard } = await import('${origin}/sdk/switchboard.js');`,
    `const client = new Switchboard({ url: '${ws}/ws'${auth ? ", token: 'YOUR_TOKEN'" : ''} });`,
    `client.connection.on('change', (c) => console.log('connection', c.current));`,
    `const channel = client.channels.get('hello');`,
    `await channel.subscribe((m) => console.log('received', m.offset, m.data));`,
    `const ack = await channel.publish('greeting', { text: 'hello from the browser' });`,
    `console.log('stored at offset', ack.offset);`,
  ].join('\n');
}

/** The backend snippet: a Node 18+ ES module publishing through the REST API. */
export function backendSnippet(origin: string, auth: boolean): string {
  const headers = auth
    ? `{ 'content-type': 'application/json', authorization: 'Basic ' + btoa('KEY_NAME:KEY_SECRET') }`
    : `{ 'content-type': 'application/json' }`;
  return [
    `const res = await fetch('${origin}/v1/channels/hello/messages', {`,
    `  method: 'POST',`,
    `  headers: ${headers},`,
    `  body: JSON.stringify({ name: 'greeting', data: { text: 'hello from a backend' } }),`,
    `});`,
    `console.log(res.status, await res.json());`,
  ].join('\n');
}

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const parts = d > 0 ? [`${d}d`, `${h}h`, `${m}m`] : h > 0 ? [`${h}h`, `${m}m`] : [`${m}m`];
  return `${parts.join(' ')} ${s % 60}s`.replace(/^0m /, '');
}

function show(info: NodeInfo, fetchedAt: number): void {
  $('version').textContent = info.version;
  $('engine').textContent = info.engine;
  $('broker').textContent = info.broker;
  $('node-id').textContent = info.nodeId;
  $('auth').textContent = info.auth ? 'on (tokens, API keys)' : 'off: open to anyone';
  $('connections').textContent = String(info.connections);
  $('channels').textContent = String(info.channels);
  $('footer-node').textContent = `switchboard ${info.version} · ${info.nodeId}`;
  const tick = (): void => {
    $('uptime').textContent = duration(info.uptimeMs + performance.now() - fetchedAt);
  };
  tick();
  setInterval(tick, 1000);
  if (info.links.demo !== null) {
    $('demo-link').setAttribute('href', info.links.demo);
    $('demo-note').textContent = 'the station on a live map, fed by this node';
  }
  if (info.links.admin === null) {
    $('admin-link').removeAttribute('href');
    $('admin-link').classList.add('off');
    $('admin-note').textContent = 'not enabled on this node';
  }
  const origin = location.origin;
  $('snippet-browser').textContent = browserSnippet(origin, info.auth);
  $('snippet-backend').textContent = backendSnippet(origin, info.auth);
  $('snippet-curl').textContent =
    `curl -X POST ${origin}/v1/channels/hello/messages -H 'content-type: application/json' ` +
    `-d '{"name":"greeting","data":{"text":"hello from curl"}}'`;
  $('auth-hint').hidden = !info.auth;
  const status = $('status');
  status.textContent = 'online';
  status.className = 'pill ok';
}

async function load(): Promise<void> {
  const started = performance.now();
  const res = await fetch('/v1/info', { headers: { accept: 'application/json' } });
  if (!res.ok) throw new Error(`GET /v1/info answered ${res.status}`);
  show((await res.json()) as NodeInfo, (started + performance.now()) / 2);
}

for (const button of document.querySelectorAll<HTMLButtonElement>('button[data-copy]')) {
  button.addEventListener('click', () => {
    const text = $(button.dataset['copy'] ?? '').textContent ?? '';
    navigator.clipboard.writeText(text).then(
      () => (button.textContent = 'Copied'),
      () => (button.textContent = 'Select and copy'),
    );
    setTimeout(() => (button.textContent = 'Copy'), 1500);
  });
}

load().catch((err: unknown) => {
  const status = $('status');
  status.textContent = `unreachable: ${err instanceof Error ? err.message : String(err)}`;
  status.className = 'pill bad';
});
