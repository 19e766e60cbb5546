// The exports page at /export/ui in a real browser: Debian's chromium, driven by playwright-core.
// In CI (CI=true) a missing chromium fails the test (`requireProgram`), it never skips there.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deferred } from '@spark-export/core/testing';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UI_CONTENT_SECURITY_POLICY } from '../src/ui.js';
import { removeDir, SIDECAR_DIR, startTestSidecar, type TestSidecar, tempDir } from './helpers.js';
import { createItemsDatabase, opsConfig, requireProgram } from './programs.js';

const browser = await requireProgram('chromium', 'chromium', ['/usr/bin']);
/** Where the test keeps its screenshot (git-ignored). */
const ARTIFACTS = join(SIDECAR_DIR, 'test-artifacts');
const TOKEN = 'ui-test-token-0123456789';
const API_HEADERS = { authorization: `Bearer ${TOKEN}`, 'x-user-id': 'ada' };
const MILLION = 1_000_000;

describe('the exports page files', () => {
  it('have no inline script or style, so that the strict CSP holds', () => {
    const html = readFileSync(join(SIDECAR_DIR, 'ui', 'index.html'), 'utf8');
    for (const script of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)) {
      expect(script[1]).toMatch(/\bsrc="\/export\/ui\/app\.js"/);
      expect(script[2]!.trim()).toBe('');
    }
    expect(html).not.toMatch(/<style\b|\sstyle="|\son[a-z]+="/i);
    expect(UI_CONTENT_SECURITY_POLICY).not.toMatch(/unsafe-inline|unsafe-eval|\*/);
    expect(UI_CONTENT_SECURITY_POLICY).toMatch(/default-src 'none'/);
  });
});

describe('the sidecar with EXPORT_UI=false and EXPORT_EVENT_STREAMS_PER_OWNER=1', () => {
  it('does not serve the page, and limits open event streams as configured', async () => {
    const dir = tempDir('spark-ui-off-');
    createItemsDatabase(join(dir, 'items.sqlite'), 3);
    const sidecar = await startTestSidecar(opsConfig(join(dir, 'items.sqlite')), {
      baseDir: dir,
      env: { EXPORT_UI: 'false', EXPORT_EVENT_STREAMS_PER_OWNER: '1', LOG_LEVEL: 'silent' },
    });
    const gate = deferred();
    try {
      const page = await fetch(sidecar.url('/export/ui'));
      expect(page.status).toBe(404);
      expect(page.headers.get('content-type')).toBe('application/problem+json');
      await page.arrayBuffer();
      expect((await fetch(sidecar.url('/export/datasets'))).status).toBe(200);

      sidecar.manager.defineDataset('held', {
        async *source() {
          yield { n: 1 };
          await gate.promise;
        },
      });
      const started = new Promise((resolve) => sidecar.manager.once('job:started', resolve));
      const created = await fetch(sidecar.url('/export/jobs'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ dataset: 'held', format: 'csv' }),
      });
      const { id } = (await created.json()) as { id: string };
      await started;
      const open = await fetch(sidecar.url(`/export/jobs/${id}/events`));
      expect(open.status).toBe(200);
      const refused = await fetch(sidecar.url(`/export/jobs/${id}/events`));
      expect(refused.status).toBe(429);
      expect(refused.headers.get('retry-after')).toBe('5');
      expect(await refused.json()).toMatchObject({ code: 'TOO_MANY_EVENT_STREAMS' });
      gate.resolve();
      expect(await open.text()).toMatch(/event: succeeded\n/);
    } finally {
      gate.resolve();
      await sidecar.close();
      removeDir(dir);
    }
  });
});

describe.skipIf(browser.skip)('the exports page at /export/ui, in headless Chromium', () => {
  let dir: string;
  let sidecar: TestSidecar;
  let context: BrowserContext;
  let page: Page;
  const held = () => ({ gate: deferred(), arrived: deferred() });
  /** Where the next export of `million` stops halfway, and tells that it got there. */
  let halfway = held();
  const pageErrors: string[] = [];

  beforeAll(async () => {
    dir = tempDir('spark-ui-');
    createItemsDatabase(join(dir, 'items.sqlite'), 10);
    sidecar = await startTestSidecar(opsConfig(join(dir, 'items.sqlite')), {
      baseDir: dir,
      env: {
        EXPORT_MAX_CONCURRENT: '1',
        EXPORT_API_TOKEN: TOKEN,
        EXPORT_OWNER_HEADER: 'X-User-Id',
        LOG_LEVEL: 'silent',
      },
    });
    // A million rows that stop halfway until the test lets them go on: the page is looked at
    // while the job is exactly mid-way, holding the only slot.
    sidecar.manager.defineDataset('million', {
      description: 'A million numbered rows',
      columns: [
        { name: 'id', type: 'integer' },
        { name: 'label', label: 'Label' },
      ],
      params: { rows: { type: 'integer', min: 1, max: MILLION, default: MILLION } },
      count: (params) => params.rows,
      async *source(params) {
        for (let id = 1; id <= params.rows; id++) {
          if (id === params.rows / 2) {
            const stop = halfway;
            stop.arrived.resolve();
            await stop.gate.promise;
          }
          yield { id, label: `row ${id}` };
        }
      },
    });
    context = await chromium.launchPersistentContext(join(dir, 'chromium-profile'), {
      executablePath: browser.path!,
      headless: true,
      acceptDownloads: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      // A refused request (the 429 the test provokes) is logged as a failed load: not a page
      // error. A script error or a CSP violation ("Refused to ...") is.
      if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
        pageErrors.push(message.text());
      }
    });
  }, 60_000);

  afterAll(async () => {
    halfway.gate.resolve();
    await context?.close();
    await sidecar?.close();
    if (dir) removeDir(dir);
  });

  it('starts a 1M-row export, shows it live, tells "busy" on a 429, downloads the exact file, and cancels', async () => {
    const response = await page.goto(sidecar.url('/export/ui'));
    expect(response?.status()).toBe(200);
    expect(response?.headers()['content-security-policy']).toBe(UI_CONTENT_SECURITY_POLICY);

    // The API wants a token and the owner header: the page asks for both, then sends them.
    await page.getByLabel('API token').fill(TOKEN);
    await page.getByLabel(/User/).fill('ada');
    await page.getByLabel(/User/).press('Enter');
    await expect.poll(() => page.locator('#datasets dt').allTextContents()).toContain('million');
    await expect.poll(() => page.locator('#datasets').textContent()).toMatch(/Columns: id, Label/);
    await expect.poll(() => page.locator('#datasets').textContent()).toMatch(/rows \(integer\)/);

    // Everything by keyboard: choose, then Enter on the focused button.
    await page.getByLabel('Dataset', { exact: true }).selectOption('million');
    await page.getByLabel('Format').selectOption('csv');
    await page.getByLabel('Compression').selectOption('none');
    await page.locator('#start-button').focus();
    await page.keyboard.press('Enter');

    const job = page.locator('#jobs li').first();
    await expect.poll(() => job.getAttribute('data-status')).toBe('running');
    const bar = job.locator('progress');
    // Held at half of a million rows: the bar has moved, and not to the end.
    await expect
      .poll(async () => Number(await bar.evaluate((node) => (node as unknown as { value: number }).value)), {
        timeout: 30_000,
      })
      .toBeGreaterThan(0);
    const midway = Number(await bar.evaluate((node) => (node as unknown as { value: number }).value));
    expect(midway).toBeLessThanOrEqual(50);
    const id = await job.getAttribute('data-job-id');
    expect(id).toMatch(/^exp_/);

    // The only slot is taken: another export is refused, and the page says when to retry.
    await page.getByLabel('Dataset', { exact: true }).selectOption('items');
    await page.locator('#start-button').focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('#notice').textContent()).toMatch(/^Busy, retry in \d+ s$/);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'exports-page.png'), fullPage: true });

    // Let the first export go on; the next one stops at a gate of its own.
    const first = halfway;
    await first.arrived.promise;
    halfway = held();
    first.gate.resolve();
    await expect.poll(() => job.getAttribute('data-status'), { timeout: 60_000 }).toBe('succeeded');
    expect(Number(await bar.evaluate((node) => (node as unknown as { value: number }).value))).toBe(100);
    expect(await job.locator('.rows').textContent()).toMatch(/^1,000,000 of 1,000,000 rows/);

    const downloadButton = job.getByRole('button', { name: 'Download' });
    await downloadButton.focus();
    const [download] = await Promise.all([page.waitForEvent('download'), page.keyboard.press('Enter')]);
    const saved = join(dir, 'downloaded.csv');
    await download.saveAs(saved);
    const bytes = readFileSync(saved);
    const record = (await (
      await fetch(sidecar.url(`/export/jobs/${id}`), { headers: API_HEADERS })
    ).json()) as {
      file: { sha256: string; bytes: number };
    };
    expect(bytes.length).toBe(record.file.bytes);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(record.file.sha256);
    expect(bytes.toString('utf8', 0, 20)).toBe('id,Label\n1,row 1\n2,r');
    expect(download.suggestedFilename()).toMatch(/\.csv$/);

    // Cancel, by keyboard too: a second export, held halfway, ends `cancelled` without a download.
    await page.getByLabel('Dataset', { exact: true }).selectOption('million');
    await page.locator('#start-button').focus();
    await page.keyboard.press('Enter');
    const second = page.locator('#jobs li').first();
    await expect.poll(() => second.getAttribute('data-job-id')).not.toBe(id);
    await expect.poll(() => second.getAttribute('data-status')).toBe('running');
    await second.getByRole('button', { name: 'Cancel' }).focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => second.getAttribute('data-status')).toBe('cancelled');
    expect(await second.getByRole('button').count()).toBe(0);
    expect(pageErrors).toEqual([]);
  }, 120_000);
});
