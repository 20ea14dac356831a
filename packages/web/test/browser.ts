// A real Chromium for the UI's tests and bench (Debian's /usr/bin/chromium through
// playwright-core), the built UI, and a pixel comparison of screenshots done by the browser.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Browser, type Page, chromium } from 'playwright-core';

export const WEB_DIR = fileURLToPath(new URL('..', import.meta.url));
export const CHROMIUM = process.env.KK_CHROMIUM || '/usr/bin/chromium';

/** Build packages/web once if dist/ is missing (npm run build / pretest build it too). */
export function ensureBuilt(): void {
  if (existsSync(`${WEB_DIR}dist/index.html`)) return;
  execFileSync(process.execPath, [fileURLToPath(new URL('../../../node_modules/vite/bin/vite.js', import.meta.url)), 'build'], { cwd: WEB_DIR, stdio: 'ignore' });
}

export async function launch(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: install it (apt-get install chromium fonts-wqy-microhei) or set KK_CHROMIUM`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-gpu', '--font-render-hinting=none'],
  });
}

/** Collect CSP violations and page errors: a test ends by asserting there were none. */
export function watchProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
  });
  return problems;
}

/**
 * The share of pixels that differ (any channel by more than 40 of 255) between two PNGs of the
 * same size, decoded by the browser itself (1 when the sizes differ).
 */
export async function pixelDiff(browser: Browser, a: Buffer, b: Buffer): Promise<number> {
  const page = await browser.newPage();
  try {
    return await page.evaluate(
      async ([x, y]) => {
        const load = async (b64: string) => createImageBitmap(await (await fetch(`data:image/png;base64,${b64}`)).blob());
        const [ia, ib] = await Promise.all([load(x), load(y)]);
        if (ia.width !== ib.width || ia.height !== ib.height) return 1;
        const data = (img: ImageBitmap) => {
          const c = new OffscreenCanvas(img.width, img.height);
          const ctx = c.getContext('2d')!;
          ctx.drawImage(img, 0, 0);
          return ctx.getImageData(0, 0, img.width, img.height).data;
        };
        const da = data(ia);
        const db = data(ib);
        let diff = 0;
        for (let i = 0; i < da.length; i += 4) {
          if (Math.abs(da[i]! - db[i]!) > 40 || Math.abs(da[i + 1]! - db[i + 1]!) > 40 || Math.abs(da[i + 2]! - db[i + 2]!) > 40) diff++;
        }
        return diff / (da.length / 4);
      },
      [a.toString('base64'), b.toString('base64')],
    );
  } finally {
    await page.close();
  }
}
