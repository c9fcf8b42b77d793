/**
 * `npm run demo [-- --port N]`: one command for the whole ISS demo: a Switchboard node (the
 * embedded engine unless told otherwise), the publisher and the page, whose URL it prints.
 *
 *   --port N              the page's port (default 8090); the node takes the next free one
 *   --node-port N         the node's port (default: any free one)
 *   --node-url URL        use this running node instead of starting one
 *   --redis URL           start the node on Redis instead of the embedded engine
 *   --redis-bridge URL    publish with a raw Redis PUBLISH to this Redis (the tutorial's way); the
 *                         node (started here on the same Redis) bridges 'iss.*'
 *   --offline             never ask open-notify: positions from SGP4 only
 *   --open-notify-url U   ask this URL instead of the public open-notify API
 *   --tle FILE            a fresher two-line element set than the bundled one
 *   --interval-ms N       time between positions (default 1000)
 *   --backfill-minutes N  into an empty channel, first the model's last N minutes (default 30; 0: none)
 */
import { parseArgs } from 'node:util';
import { createLogger, resolveConfig, startServer, type RunningServer } from '@switchboard/server';
import { loadOrbit } from './orbit.js';
import { servePage } from './page.js';
import { CHANNEL, backfill, startPublisher } from './publisher.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8090' },
    host: { type: 'string', default: '127.0.0.1' },
    'node-port': { type: 'string', default: '0' },
    'node-url': { type: 'string' },
    redis: { type: 'string' },
    'redis-bridge': { type: 'string' },
    offline: { type: 'boolean', default: false },
    'open-notify-url': { type: 'string' },
    tle: { type: 'string' },
    'interval-ms': { type: 'string', default: '1000' },
    'backfill-minutes': { type: 'string', default: '30' },
  },
  strict: true,
});

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

const host = values.host;
const page = await servePage({ port: Number(values.port), host, channel: CHANNEL });
const bridge = values['redis-bridge'];
let node: RunningServer | undefined;
let nodeUrl = values['node-url'];
if (nodeUrl === undefined) {
  const redis = values.redis ?? bridge;
  const config = resolveConfig([
    {
      source: 'demo',
      values: {
        port: Number(values['node-port']),
        host,
        logLevel: 'warn',
        demoUrl: page.url,
        ...(redis !== undefined && { redis }),
        ...(bridge !== undefined && { redisBridge: ['iss.*'] }),
      },
    },
  ]);
  node = await startServer(config, createLogger(config.logLevel));
  nodeUrl = `http://${host}:${node.port}`;
  say(
    `node:      ${nodeUrl}/ (${redis === undefined ? 'embedded engine' : `Redis ${redis}`}, ${node.engine})`,
  );
}
nodeUrl = nodeUrl.replace(/\/$/, '');
page.setNode(nodeUrl);
const orbit = values.tle === undefined ? loadOrbit() : loadOrbit(values.tle);
if (bridge === undefined && Number(values['backfill-minutes']) > 0) {
  const n = await backfill({ url: nodeUrl, minutes: Number(values['backfill-minutes']), orbit });
  if (n > 0)
    say(
      `publisher: trail of the last ${values['backfill-minutes']} minutes (model, ${n} positions)`,
    );
}
const publisher = startPublisher({
  ...(bridge === undefined ? { url: nodeUrl } : { redis: bridge }),
  offline: values.offline,
  ...(values['open-notify-url'] !== undefined && { openNotifyUrl: values['open-notify-url'] }),
  orbit,
  intervalMs: Number(values['interval-ms']),
  log: (line) => say(`publisher: ${line}`),
});
say(
  `publisher: ${bridge === undefined ? `REST ${nodeUrl}/v1/channels/${CHANNEL}/messages` : `raw PUBLISH ${CHANNEL} on ${bridge}`}`,
);
say(`ISS demo:  ${page.url}`);

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await publisher.stop();
  await page.close();
  await node?.close();
  process.exit(0);
};
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
