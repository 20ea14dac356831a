// The signed-in token: who it is and what it may do (GET /api/v1/whoami), kept for the tab.
import { type Who, api, saveToken, savedToken, whenAuthLost } from './api.js';
import { stopLive } from './live.svelte.js';

export const session = $state({ who: undefined as Who | undefined, checking: true, message: '' });

export async function signIn(token: string): Promise<void> {
  const who = await api<Who>('GET', '/api/v1/whoami', { token });
  saveToken(token);
  session.who = who;
  session.message = '';
}

export function signOut(message = ''): void {
  saveToken(null);
  stopLive();
  session.who = undefined;
  session.message = message;
}

/** On load: resume the tab's session if its token still works. */
export async function resume(): Promise<void> {
  const token = savedToken();
  try {
    if (token) await signIn(token);
  } catch (err) {
    signOut(`the saved token no longer works: ${(err as Error).message}`);
  } finally {
    session.checking = false;
  }
}

whenAuthLost(() => signOut('the server no longer accepts this token (expired or revoked); sign in again'));
