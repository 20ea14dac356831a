// Name rules of DESIGN 3, checked before any I/O.
import { KkError } from './errors.js';

const PROJECT_APP = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

export function assertProjectName(name: string): void {
  check('project', name, PROJECT_APP, 'lower-case letters, digits, ".", "_" or "-", at most 64, starting with a letter or digit');
}

export function assertAppName(name: string): void {
  check('app', name, PROJECT_APP, 'lower-case letters, digits, ".", "_" or "-", at most 64, starting with a letter or digit');
}

export function assertVersionName(name: string): void {
  check('version', name, VERSION, 'letters, digits, ".", "_", "+" or "-", at most 128, starting with a letter or digit');
  if (name === 'latest') {
    throw new KkError('INVALID_NAME', 'version "latest" is reserved: it names the newest version when pulling');
  }
}

/** Channels share the version alphabet; `promoted` is the one deploy targets follow. */
export function assertChannelName(name: string): void {
  check('channel', name, PROJECT_APP, 'lower-case letters, digits, ".", "_" or "-"');
}

function check(kind: string, name: string, re: RegExp, rule: string): void {
  if (typeof name !== 'string' || !re.test(name) || name.includes('..')) {
    throw new KkError('INVALID_NAME', `invalid ${kind} name ${JSON.stringify(name)}: use ${rule}`, {
      details: { kind, name },
    });
  }
}

/** What a user may ask to pull: `latest`, a version name or a channel name. */
export function assertVersionSpec(spec: string): void {
  if (spec !== 'latest') check('version', spec, VERSION, 'a version name, a channel name or "latest"');
}
