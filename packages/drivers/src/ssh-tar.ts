// The tar framing of the ssh store's bulk requests: the writer builds ustar (pax for long names)
// headers around buffers already in memory, the reader pulls entries out of the reply stream.
// Only what the ssh driver sends and what GNU tar and bsdtar send back is handled.

const BLOCK = 512;
const ZERO = Buffer.alloc(BLOCK);

export interface TarEntryOut {
  name: string;
  /** Regular file bytes; absent for a hard link. */
  data?: Uint8Array;
  /** Target of a hard link (type 1), relative to the extraction directory. */
  link?: string;
}

/** The archive as a list of buffers (no copy of the data) and its total length. */
export function buildTar(entries: readonly TarEntryOut[]): { parts: Uint8Array[]; length: number } {
  const parts: Uint8Array[] = [];
  let length = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    length += b.length;
  };
  for (const e of entries) {
    const size = e.data?.length ?? 0;
    const fits = splitName(e.name) && (e.link === undefined || Buffer.byteLength(e.link) <= 100);
    if (!fits) {
      let records = paxRecord('path', e.name);
      if (e.link !== undefined) records += paxRecord('linkpath', e.link);
      const body = Buffer.from(records);
      push(header({ name: 'PaxHeader', size: body.length, type: 'x' }));
      push(body);
      if (body.length % BLOCK) push(ZERO.subarray(0, BLOCK - (body.length % BLOCK)));
    }
    const split = fits ? splitName(e.name)! : { prefix: '', name: 'pax' };
    push(header({ ...split, size, type: e.link !== undefined ? '1' : '0', link: fits ? e.link : 'pax' }));
    if (e.data && size) {
      push(e.data);
      if (size % BLOCK) push(ZERO.subarray(0, BLOCK - (size % BLOCK)));
    }
  }
  push(Buffer.alloc(BLOCK * 2));
  return { parts, length };
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

/** ustar's name (100 bytes) + prefix (155 bytes) split of `name`, or undefined if it does not fit. */
function splitName(name: string): { prefix: string; name: string } | undefined {
  if (Buffer.byteLength(name) <= 100) return { prefix: '', name };
  for (let i = name.indexOf('/'); i > 0; i = name.indexOf('/', i + 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(rest) <= 100 && rest !== '') return { prefix, name: rest };
  }
  return undefined;
}

function header(h: { name: string; prefix?: string; size: number; type: string; link?: string | undefined }): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(h.name, 0, 100, 'utf8');
  b.write('0000644\0', 100, 'ascii');
  b.write('0000000\0', 108, 'ascii');
  b.write('0000000\0', 116, 'ascii');
  b.write(h.size.toString(8).padStart(11, '0') + '\0', 124, 'ascii');
  b.write(Math.floor(Date.now() / 1000).toString(8).padStart(11, '0') + '\0', 136, 'ascii');
  b.write(h.type, 156, 'ascii');
  if (h.link) b.write(h.link, 157, 100, 'utf8');
  b.write('ustar\0' + '00', 257, 'ascii');
  if (h.prefix) b.write(h.prefix, 345, 155, 'utf8');
  b.fill(' ', 148, 156);
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return b;
}

/** What the tar reader needs from a byte stream. */
export interface ByteSource {
  /** Exactly `n` bytes (rejects if the stream ends first). */
  read(n: number): Promise<Buffer>;
}

export interface TarEntryIn {
  name: string;
  data: Buffer;
}

export interface TarHeaderIn {
  /** Member name, GNU long names and pax paths applied, leading `./` removed. */
  name: string;
  /** Type flag: `0` (or NUL, `7`) regular file, `5` directory, `1` hard link... */
  type: string;
  size: number;
  /** Bytes of data plus padding that follow the header. */
  dataLength: number;
  /** Link target of a hard link (type `1`). */
  link: string;
}

/**
 * The next member's header, after any GNU long-name or pax records for it; undefined at the
 * end-of-archive block. The caller reads (or skips) `dataLength` bytes next.
 */
export async function readTarHeader(src: ByteSource): Promise<TarHeaderIn | undefined> {
  let longName: string | undefined;
  let paxPath: string | undefined;
  for (;;) {
    const h = await src.read(BLOCK);
    if (h.every((byte) => byte === 0)) return undefined;
    if (!checksumOk(h)) throw new TarFormatError('bad tar header checksum');
    const size = parseSize(h.subarray(124, 136));
    const type = String.fromCharCode(h[156]!);
    const dataLength = size + ((BLOCK - (size % BLOCK)) % BLOCK);
    if (type === 'L' || type === 'x' || type === 'g') {
      const data = (await src.read(dataLength)).subarray(0, size);
      if (type === 'L') longName = cString(data);
      else if (type === 'x') paxPath = paxValue(data, 'path') ?? paxPath;
      continue;
    }
    let name = paxPath ?? longName ?? ustarName(h);
    while (name.startsWith('./')) name = name.slice(2);
    let link = cString(h.subarray(157, 257));
    while (link.startsWith('./')) link = link.slice(2);
    return { name, type, size, dataLength, link };
  }
}

/** Whether a member of `type` is a regular file. */
export const isRegularFile = (type: string) => type === '0' || type === '\0' || type === '7';

/**
 * Reads one archive from `src` up to and including its first end-of-archive block, calling
 * `onFile` for each regular file. The zero padding after that block is the caller's to skip.
 */
export async function readTar(src: ByteSource, onFile: (e: TarEntryIn) => void): Promise<void> {
  // A second name of an inode already in the archive comes as a hard link to the first.
  const seen = new Map<string, Buffer>();
  for (let h = await readTarHeader(src); h; h = await readTarHeader(src)) {
    const body = h.dataLength ? await src.read(h.dataLength) : Buffer.alloc(0);
    const data = isRegularFile(h.type) ? body.subarray(0, h.size) : h.type === '1' ? seen.get(h.link) : undefined;
    if (!data) continue;
    seen.set(h.name, data);
    onFile({ name: h.name, data });
  }
}

export class TarFormatError extends Error {}

function ustarName(h: Buffer): string {
  const name = cString(h.subarray(0, 100));
  // The prefix field exists in POSIX ustar only; GNU's own format keeps other data there.
  if (h.subarray(257, 263).toString('latin1') === 'ustar\0') {
    const prefix = cString(h.subarray(345, 500));
    if (prefix) return `${prefix}/${name}`;
  }
  return name;
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}

function parseSize(field: Buffer): number {
  if (field[0]! & 0x80) {
    // GNU base-256 for sizes past 8 GiB.
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  const text = cString(field).trim();
  return text ? parseInt(text, 8) : 0;
}

function checksumOk(h: Buffer): boolean {
  const stored = parseInt(cString(h.subarray(148, 156)).trim(), 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  return sum === stored;
}

function paxValue(data: Buffer, key: string): string | undefined {
  let at = 0;
  let found: string | undefined;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space < 0) break;
    const len = parseInt(data.subarray(at, space).toString('ascii'), 10);
    if (!(len > 0)) break;
    const record = data.subarray(space + 1, at + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (record.slice(0, eq) === key) found = record.slice(eq + 1);
    at += len;
  }
  return found;
}
