/**
 * The demo page: subscribes to `iss.telemetry` with the SDK and draws the station on a world map
 * (world-atlas outlines projected by d3-geo, bundled: no tile or font is fetched), with its trail,
 * speed, altitude, and the connection's state and transport. The trail is keyed by offset: after
 * a node restart the SDK resumes and fills the gap, so the line goes on without a hole. What the
 * page has seen is in `window.iss` for the tests.
 */
import { Switchboard, type Message } from '@switchboard/client';
import { geoEquirectangular, geoGraticule10, geoPath } from 'd3-geo';
import { feature } from 'topojson-client';
import type { Topology } from 'topojson-specification';
import land110 from 'world-atlas/land-110m.json';

interface Telemetry {
  readonly timestamp: number;
  readonly latitude: number;
  readonly longitude: number;
  readonly altitudeKm: number;
  readonly speedKmh: number;
  readonly source: 'open-notify' | 'sgp4';
}

/** What the page has seen, for tests and the curious (DevTools: `iss`). */
interface PageState {
  /** Offsets of the messages delivered live (not from the history loaded at start), in order. */
  readonly offsets: number[];
  /** Every position drawn, oldest first. */
  readonly trail: Telemetry[];
  transport: string | undefined;
  state: string;
  last: Telemetry | undefined;
  /** Where the marker is on the map (SVG user units). */
  marker: [number, number] | undefined;
}

declare global {
  interface Window {
    iss: PageState;
  }
}

/** A little over one orbit at one position a second. */
const MAX_TRAIL = 6000;

const state: PageState = {
  offsets: [],
  trail: [],
  transport: undefined,
  state: 'loading',
  last: undefined,
  marker: undefined,
};
window.iss = state;

const $ = (id: string): HTMLElement => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} missing`);
  return el;
};

const projection = geoEquirectangular().fitSize([960, 480], { type: 'Sphere' });
const path = geoPath(projection);
$('sphere').setAttribute('d', path({ type: 'Sphere' }) ?? '');
$('graticule').setAttribute('d', path(geoGraticule10()) ?? '');
const world = land110 as unknown as Topology;
const landObject = world.objects['land'];
if (landObject !== undefined) $('land').setAttribute('d', path(feature(world, landObject)) ?? '');

/** Positions by offset (bridged messages, which have none, get keys after every offset). */
const points = new Map<number, Telemetry>();
let unpositioned = Number.MAX_SAFE_INTEGER / 2;
let live = 0;
let fromHistory = 0;

function isTelemetry(d: unknown): d is Telemetry {
  const t = d as Partial<Telemetry> | null;
  return typeof t?.latitude === 'number' && typeof t.longitude === 'number';
}

function add(message: Message): boolean {
  if (!isTelemetry(message.data)) return false;
  points.set(message.offset ?? unpositioned++, message.data);
  return true;
}

let redraw = 0;
function render(): void {
  if (redraw !== 0) return;
  redraw = requestAnimationFrame(() => {
    redraw = 0;
    const keys = [...points.keys()].sort((a, b) => a - b);
    for (const k of keys.slice(0, Math.max(0, keys.length - MAX_TRAIL))) points.delete(k);
    const trail = keys.slice(-MAX_TRAIL).map((k) => points.get(k) as Telemetry);
    state.trail.splice(0, state.trail.length, ...trail);
    $('trail').setAttribute(
      'd',
      path({ type: 'LineString', coordinates: trail.map((t) => [t.longitude, t.latitude]) }) ?? '',
    );
    const last = trail.at(-1);
    state.last = last;
    if (last === undefined) return;
    const xy = projection([last.longitude, last.latitude]);
    if (xy !== null) {
      state.marker = [Math.round(xy[0] * 100) / 100, Math.round(xy[1] * 100) / 100];
      const marker = $('marker');
      marker.setAttribute('transform', `translate(${xy[0]},${xy[1]})`);
      marker.setAttribute('visibility', 'visible');
    }
    $('lat').textContent =
      `${Math.abs(last.latitude).toFixed(3)}° ${last.latitude >= 0 ? 'N' : 'S'}`;
    $('lon').textContent =
      `${Math.abs(last.longitude).toFixed(3)}° ${last.longitude >= 0 ? 'E' : 'W'}`;
    $('alt').textContent = `${last.altitudeKm.toFixed(1)} km`;
    $('speed').textContent = `${last.speedKmh.toLocaleString('en')} km/h`;
    $('source').textContent = last.source === 'sgp4' ? 'SGP4 model (offline)' : 'open-notify API';
    $('updated').textContent = new Date(last.timestamp).toISOString().slice(11, 19) + ' UTC';
    $('count').textContent = `${live} live, ${fromHistory} from history`;
    const gaps = keys.filter(
      (k, i) => i > 0 && k < unpositioned && k !== (keys[i - 1] as number) + 1,
    );
    $('trail-info').textContent =
      `${trail.length} points, ${gaps.length === 0 ? 'no gap' : `${gaps.length} gaps`}`;
  });
}

function showConnection(): void {
  $('state').textContent = state.state;
  $('transport').textContent = state.transport ?? '–';
  $('conn').setAttribute('class', `pill ${state.state}`);
}

async function main(): Promise<void> {
  const config = (await (await fetch('config.json')).json()) as {
    nodeUrl: string;
    channel: string;
  };
  $('channel').textContent = config.channel;
  $('node-link').setAttribute('href', `${config.nodeUrl}/`);
  const client = new Switchboard({
    url: `${config.nodeUrl.replace(/^http/, 'ws')}/ws`,
    connectTimeoutMs: 3000,
    backoff: { baseMs: 250, capMs: 2000 },
  });
  client.connection.on('change', (c) => {
    state.state = c.current;
    state.transport = client.connection.transport;
    showConnection();
  });
  const channel = client.channels.get(config.channel);
  await channel.subscribe((m) => {
    if (m.offset !== undefined) state.offsets.push(m.offset);
    live++;
    if (add(m)) render();
  });
  state.transport = client.connection.transport;
  showConnection();
  // The trail so far, from history: everything before the first live message.
  const page = await channel.history({ direction: 'backward', limit: 1000 });
  for (const m of page.items) if (!points.has(m.offset ?? -1) && add(m)) fromHistory++;
  render();
}

main().catch((err: unknown) => {
  state.state = 'failed';
  showConnection();
  $('state').textContent = `failed: ${err instanceof Error ? err.message : String(err)}`;
});
