// Prometheus metrics (prom-client), one registry per server so several servers can share a
// process (tests do): requests and latency per route, bytes in and out, dedup hits, webhook
// queue depth and outcomes, retention and GC results.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface Metrics {
  registry: Registry;
  requests: Counter<'method' | 'route' | 'status'>;
  duration: Histogram<'method' | 'route'>;
  bytesIn: Counter<'route'>;
  bytesOut: Counter<'route'>;
  dedupHits: Counter<'via'>;
  chunksStored: Counter;
  webhookQueueDepth: Gauge;
  webhookDeliveries: Counter<'result'>;
  gcBytesFreed: Counter;
  retentionRuns: Counter<'result'>;
  versionsDeleted: Counter;
}

export function createMetrics(queueDepth: () => number): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'kk_' });
  const registers = [registry];
  return {
    registry,
    requests: new Counter({ name: 'kk_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['method', 'route', 'status'], registers }),
    duration: new Histogram({
      name: 'kk_http_request_duration_seconds',
      help: 'HTTP request latency by route',
      labelNames: ['method', 'route'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    bytesIn: new Counter({ name: 'kk_http_bytes_received_total', help: 'Request body bytes received', labelNames: ['route'], registers }),
    bytesOut: new Counter({ name: 'kk_http_bytes_sent_total', help: 'Response bytes sent', labelNames: ['route'], registers }),
    dedupHits: new Counter({
      name: 'kk_dedup_hits_total',
      help: 'Chunks a client did not have to send because the store already held them',
      labelNames: ['via'],
      registers,
    }),
    chunksStored: new Counter({ name: 'kk_chunks_stored_total', help: 'New chunks written to the store', registers }),
    webhookQueueDepth: new Gauge({
      name: 'kk_webhook_queue_depth',
      help: 'Webhook deliveries waiting in the outbox (at the last scan)',
      registers,
      collect() {
        this.set(queueDepth());
      },
    }),
    webhookDeliveries: new Counter({ name: 'kk_webhook_deliveries_total', help: 'Webhook delivery attempts by outcome', labelNames: ['result'], registers }),
    gcBytesFreed: new Counter({ name: 'kk_gc_bytes_freed_total', help: 'Bytes of chunks deleted by GC', registers }),
    retentionRuns: new Counter({ name: 'kk_retention_runs_total', help: 'Retention + GC runs by outcome', labelNames: ['result'], registers }),
    versionsDeleted: new Counter({ name: 'kk_retention_versions_deleted_total', help: 'Versions deleted by retention', registers }),
  };
}
