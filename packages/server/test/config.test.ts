// The server config file: the seed's webhook shape, sizes and durations, and clear refusals.
import { describe, expect, it } from 'vitest';
import { isKkError } from '@kk/core';
import { parseDuration, parseServerConfig, resolveConfig, startServer } from '../src/index.js';

describe('server config file', () => {
  it('reads store, listen, retention, limits and seed 9.3 webhooks', () => {
    const f = parseServerConfig(`
store: ./data
listen: 0.0.0.0:8080
retain_versions: 5
retention_schedule: "30 2 * * *"
retention_timezone: UTC
gc_grace: 2h
max_body: 8MB
webhook_backoff: 500ms
webhooks:
  - name: slack_notify
    event: promote
    url: https://hooks.slack.com/services/xxx/yyy/zzz
  - name: ci_trigger
    events: [push, delete]
    url: https://ci.example.com/build
    project: shop
`);
    expect(f.store).toBe('./data');
    expect(f.listen).toBe('0.0.0.0:8080');
    expect(f.config).toMatchObject({ retainVersions: 5, retentionSchedule: '30 2 * * *', retentionTimezone: 'UTC', gcGraceMs: 7_200_000, maxBodyBytes: 8 * 1024 * 1024, webhookBackoffMs: 500 });
    expect(f.config.webhooks).toEqual([
      { name: 'slack_notify', events: ['promote'], url: 'https://hooks.slack.com/services/xxx/yyy/zzz' },
      { name: 'ci_trigger', events: ['push', 'delete'], url: 'https://ci.example.com/build', project: 'shop' },
    ]);
    expect(resolveConfig(f.config).retainVersions).toBe(5);
  });

  it('refuses unknown keys, unknown events, bad URLs, bad cron expressions and time zones', () => {
    const refused = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        return isKkError(err, 'CONFIG_INVALID') ? (err as Error).message : `wrong error ${String(err)}`;
      }
      return 'accepted';
    };
    expect(refused(() => parseServerConfig('retain: 5'))).toContain('unknown key "retain"');
    expect(refused(() => parseServerConfig('webhooks: [{name: a, event: deploy, url: "http://x/"}]'))).toContain('unknown event "deploy"');
    expect(refused(() => parseServerConfig('webhooks: [{name: a, event: push, url: "ftp://x/"}]'))).toContain('http(s)');
    expect(refused(() => resolveConfig({ retentionSchedule: 'every night' }))).toContain('retention_schedule');
    expect(refused(() => resolveConfig({ retentionTimezone: 'Mars/Olympus' }))).toContain('Mars/Olympus');
    expect(refused(() => resolveConfig({ retainVersions: 0 }))).toContain('retain_versions');
  });

  it('a server with a bad schedule does not start', async () => {
    const err = await startServer({ store: '/nonexistent/never-created', listen: '127.0.0.1:0', log: false, config: { retentionSchedule: '61 3 * * *' } }).catch((e: unknown) => e);
    expect(isKkError(err, 'CONFIG_INVALID')).toBe(true);
  });

  it('reads durations', () => {
    expect([parseDuration('30d'), parseDuration('12h'), parseDuration('15m'), parseDuration('45s'), parseDuration(250)]).toEqual([2_592_000_000, 43_200_000, 900_000, 45_000, 250]);
  });
});
