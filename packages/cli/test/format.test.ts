import { describe, expect, it } from 'vitest';
import { formatBytes, formatDuration, parseDuration, table } from '../src/format.js';

describe('format', () => {
  it('formats bytes in binary units', () => {
    expect([0, 1023, 1024, 1536, 10 * 1024 * 1024 + 1, 1024 ** 3, 5.5 * 1024 ** 4].map(formatBytes)).toEqual([
      '0 B', '1023 B', '1.00 KiB', '1.50 KiB', '10.0 MiB', '1.00 GiB', '5.50 TiB',
    ]);
  });
  it('formats durations', () => {
    expect([0.123, 4.56, 42, 185, 7440].map(formatDuration)).toEqual(['0.12s', '4.6s', '42s', '3m05s', '2h04m']);
  });
  it('parses durations; a bare number is seconds; junk is a usage error', () => {
    expect(['0', '0s', '90', '250ms', '30m', '1h', '2d', '1.5h'].map((d) => parseDuration(d, '--grace'))).toEqual([
      0, 0, 90_000, 250, 1_800_000, 3_600_000, 172_800_000, 5_400_000,
    ]);
    expect(() => parseDuration('soon', '--grace')).toThrow(expect.objectContaining({ oclif: expect.objectContaining({ exit: 2 }) }));
  });
  it('aligns table columns', () => {
    expect(table([['A', 'BB', 'C'], ['long', 'x', 'y']])).toBe('A     BB  C\nlong  x   y');
  });
});
