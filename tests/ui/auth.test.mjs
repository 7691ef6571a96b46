// The web UI against a service that asks for a bearer token (scripts/test-ui starts one with --auth token-file
// and sets LMEVAL_UI_AUTH_BASE_URL and LMEVAL_UI_TOKEN): the page asks for the token, keeps it in the browser
// session only, and everything — the list, a submission, the live log, the results and artifact downloads — carries it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const BASE = process.env.LMEVAL_UI_AUTH_BASE_URL;
const TOKEN = process.env.LMEVAL_UI_TOKEN;
if (!BASE || !TOKEN) throw new Error('set LMEVAL_UI_AUTH_BASE_URL and LMEVAL_UI_TOKEN (scripts/test-ui does)');

let browser;
let page;
const pageErrors = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-dev-shm-usage'],
    headless: true,
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, baseURL: BASE, acceptDownloads: true });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on('pageerror', (error) => pageErrors.push(error.message));
});

after(async () => {
  await browser?.close();
});

test('the page asks for a token, then lists, submits, follows the log and downloads with it', async () => {
  await page.goto('/');
  const input = page.locator('#token-input');
  await input.waitFor();
  await input.fill('wrong-token');
  await page.getByRole('button', { name: 'Use token' }).click();
  await input.waitFor(); // asked again: that token is not valid
  await input.fill(TOKEN);
  await page.getByRole('button', { name: 'Use token' }).click();
  await page.locator('#forget-token').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('lm-eval-aas-token')), TOKEN);
  assert.equal(await page.evaluate(() => Object.keys(localStorage).length), 0, 'nothing kept beyond the session');

  await page.goto('/#/new');
  await page.getByLabel('Model type').fill('dummy');
  await page.getByLabel('Tasks').fill('lmeval_aas_mc');
  await page.getByLabel('Limit').fill('3');
  await page.getByRole('button', { name: 'Submit evaluation' }).click();
  await page.waitForURL(/#\/evaluations\/[0-9a-f-]{36}$/);
  await page.locator('#log[data-ended="true"]').waitFor({ timeout: 180_000 });
  assert.ok((await page.locator('#log').textContent()).split('\n').filter(Boolean).length >= 1, 'log lines arrived');
  await page.locator('#detail-state .state-succeeded').waitFor({ timeout: 180_000 });
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#download-results').click()]);
  const saved = await download.path();
  assert.match(readFileSync(saved, 'utf8'), /lmeval_aas_mc/);

  // The artifacts are fetched with the token too: the saved log hashes to the SHA-256 listed for it.
  const logRow = page.locator('#artifacts-table tr[data-path="log.txt"]');
  await logRow.waitFor();
  const listed = await logRow.locator('td.sha').getAttribute('data-sha256');
  const [logDownload] = await Promise.all([page.waitForEvent('download'), logRow.getByRole('link').click()]);
  assert.equal(createHash('sha256').update(readFileSync(await logDownload.path())).digest('hex'), listed);
  const [archive] = await Promise.all([page.waitForEvent('download'), page.locator('#download-archive').click()]);
  assert.ok(gunzipSync(readFileSync(await archive.path())).includes('results.json'), 'the archive came with the token');
  assert.match(await page.locator('#samples-note').textContent(), /did not set log_samples/);

  await page.locator('#forget-token').click();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('lm-eval-aas-token')), null);
  await page.locator('#token-input').waitFor();
  assert.deepEqual(pageErrors, []);
});
