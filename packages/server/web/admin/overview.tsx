/** The deployment at a glance: every node's numbers, and in/out rates charted live. */
import { api, type Overview } from './api';
import { LiveChart } from './chart';
import { Card, Problem, Stat, duration, num, usePoll } from './ui';

const POINTS = 120;
/** Kept across page changes, so coming back to the overview shows the last two minutes. */
const history: { t: number[]; in: number[]; out: number[]; conns: number[] } = {
  t: [],
  in: [],
  out: [],
  conns: [],
};

function record(o: Overview): void {
  const push = (a: number[], v: number): void => {
    a.push(v);
    if (a.length > POINTS) a.shift();
  };
  push(history.t, Date.now() / 1000);
  push(history.in, o.totals.messagesInPerSec);
  push(history.out, o.totals.messagesOutPerSec);
  push(history.conns, o.totals.connections);
}

export function OverviewPage() {
  const { data, error } = usePoll(async () => {
    const o = await api<Overview>('/v1/admin/overview');
    record(o);
    return {
      o,
      rates: [[...history.t], [...history.in], [...history.out]],
      conns: [[...history.t], [...history.conns]],
    };
  }, 1000);
  const o = data?.o;
  return (
    <>
      <h1>Overview</h1>
      <Problem error={error} />
      {o !== undefined && (
        <>
          <dl class="stats" aria-label="Totals across nodes">
            <Stat label="Nodes" value={`${o.totals.ready} / ${o.totals.nodes}`} hint="ready" />
            <Stat label="Connections" value={num(o.totals.connections)} />
            <Stat label="Channels" value={num(o.totals.channels)} hint="per node, summed" />
            <Stat label="Messages in" value={num(o.totals.messagesInPerSec)} hint="/s" />
            <Stat label="Messages out" value={num(o.totals.messagesOutPerSec)} hint="/s" />
            <Stat label="Max event-loop lag" value={num(o.totals.maxEventLoopLagMs)} hint="ms" />
          </dl>
          {o.missing !== undefined && o.missing.length > 0 && (
            <p class="problem" role="status">
              No answer from: {o.missing.join(', ')}
            </p>
          )}
          <div class="grid2">
            <Card title="Messages per second">
              <LiveChart
                title="Messages in and out per second, all nodes, last two minutes"
                unit=""
                series={[
                  { label: 'in', colour: '--series-1' },
                  { label: 'out', colour: '--series-2' },
                ]}
                data={data?.rates ?? [[], [], []]}
              />
            </Card>
            <Card title="Connections">
              <LiveChart
                title="Connections, all nodes, last two minutes"
                unit=""
                series={[{ label: 'connections', colour: '--series-3' }]}
                data={data?.conns ?? [[], []]}
              />
            </Card>
          </div>
          <Card title="Nodes">
            <div class="scroll">
              <table>
                <thead>
                  <tr>
                    <th scope="col">Node</th>
                    <th scope="col">State</th>
                    <th scope="col" class="n">
                      Connections
                    </th>
                    <th scope="col" class="n">
                      Channels
                    </th>
                    <th scope="col" class="n">
                      In /s
                    </th>
                    <th scope="col" class="n">
                      Out /s
                    </th>
                    <th scope="col" class="n">
                      Loop lag ms
                    </th>
                    <th scope="col">Engine · broker</th>
                    <th scope="col">Version</th>
                    <th scope="col">Uptime</th>
                  </tr>
                </thead>
                <tbody>
                  {o.nodes.map((n) => (
                    <tr key={n.id} data-node={n.id}>
                      <th scope="row" class="mono">
                        {n.id}
                      </th>
                      <td>
                        <span class={n.ready ? 'pill ok' : 'pill bad'}>
                          {n.ready ? 'ready' : 'not ready'}
                        </span>
                      </td>
                      <td class="n">{num(n.connections)}</td>
                      <td class="n">{num(n.channels)}</td>
                      <td class="n">{num(n.messagesInPerSec)}</td>
                      <td class="n">{num(n.messagesOutPerSec)}</td>
                      <td class="n">{num(n.eventLoopLagMs)}</td>
                      <td>
                        {n.engine} · {n.broker}
                      </td>
                      <td>{n.version}</td>
                      <td>{duration(n.uptimeS)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </Card>
        </>
      )}
    </>
  );
}
