import { MemoryBroker } from '../src/index.js';
import { runBrokerSuite } from './conformance/broker.js';

runBrokerSuite('MemoryBroker', () => Promise.resolve({ broker: new MemoryBroker() }), {
  lossy: false,
});
