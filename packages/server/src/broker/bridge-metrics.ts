import { Counter, type Registry } from 'prom-client';

/** What the raw-PUBLISH bridge (`--redis-bridge`) counts, so its losses are visible. */
export interface BridgeMetrics {
  readonly messages: Counter;
  readonly gaps: Counter;
  readonly gapSeconds: Counter;
}

export function createBridgeMetrics(registry: Registry): BridgeMetrics {
  return {
    messages: new Counter({
      name: 'switchboard_bridge_messages_total',
      help: 'Raw Redis PUBLISHes this node received through its --redis-bridge patterns',
      registers: [registry],
    }),
    gaps: new Counter({
      name: 'switchboard_bridge_gaps_total',
      help: 'Times the bridge subscription was lost and restored (raw PUBLISHes in between are lost)',
      registers: [registry],
    }),
    gapSeconds: new Counter({
      name: 'switchboard_bridge_gap_seconds_total',
      help: 'Seconds the bridge patterns were not subscribed while the node ran (its loss window)',
      registers: [registry],
    }),
  };
}
