// Browser tests of the web UI: headless Debian Chromium driven by playwright-core, against a
// running lm-eval-aas (local backend, `dummy` model). scripts/test-ui starts the service and
// sets LMEVAL_UI_BASE_URL. Screenshots go to tests/ui/artifacts/ (git-ignored).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE = process.env.LMEVAL_UI_BASE_URL;
if (!BASE) throw new Error('set LMEVAL_UI_BASE_URL (scripts/test-ui does)');
const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), 'artifacts');
// The service's --task-dir (scripts/test-ui passes the checkout's tasks/).
const TASKS = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'tasks');
const RUN_TIMEOUT = 180_000; // a dummy run with limit 3-5 takes ~10-20 s; leave room on a busy machine
mkdirSync(ARTIFACTS, { recursive: true });

let browser;
let context;
let page;
const pageErrors = [];
const submitted = {}; // name → evaluation id

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    // playwright-core gives every launch() a fresh temporary --user-data-dir of its own.
    headless: true,
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 860 }, baseURL: BASE, acceptDownloads: true });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  watchErrors(page);
});

after(async () => {
  await browser?.close();
});

function watchErrors(p) {
  p.on('pageerror', (error) => pageErrors.push(`pageerror: ${error.message}`));
  p.on('console', (message) => {
    // The browser logs every non-2xx fetch; the API's 4xx answers are expected in the error tests.
    if (message.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(message.text())) {
      pageErrors.push(`console: ${message.text()}`);
    }
  });
}

async function shot(name, p = page) {
  await p.screenshot({ path: join(ARTIFACTS, name), fullPage: true });
}

async function apiJson(path, init) {
  const response = await fetch(new URL(path, BASE), init);
  assert.ok(response.ok, `${path}: HTTP ${response.status}`);
  return response.status === 204 ? null : response.json();
}

/** Fills the submit form: fields by label, key/value rows by their fieldset. */
async function fillForm({ model = 'dummy', tasks, limit = '', labels = {}, modelArgs = {}, genKwargs = {} }) {
  await freshPage('/#/new');
  await page.getByRole('heading', { name: 'New evaluation' }).waitFor();
  await page.getByLabel('Model type').fill(model);
  await page.getByLabel('Tasks').fill(tasks);
  await page.getByLabel('Limit').fill(String(limit));
  const rows = async (fieldsetId, entries) => {
    const fieldset = page.locator(`#${fieldsetId}`);
    let index = 0;
    for (const [key, value] of Object.entries(entries)) {
      if (index > 0) await fieldset.locator('.add-row').click();
      await fieldset.locator('.kv-key').nth(index).fill(key);
      await fieldset.locator('.kv-value').nth(index).fill(String(value));
      index += 1;
    }
  };
  await rows('field-model_args', modelArgs);
  await rows('field-gen_kwargs', genKwargs);
  await rows('field-labels', labels);
}

/** A fresh document (a hash-only goto to the same URL would keep the old form's contents). */
async function freshPage(path) {
  await page.goto('about:blank');
  await page.goto(path);
}

async function submitForm() {
  await page.getByRole('button', { name: 'Submit evaluation' }).click();
  await page.waitForURL(/#\/evaluations\/[0-9a-f-]{36}$/);
  return page.url().split('/').pop();
}

test('the page loads its own assets only and shows the list', async () => {
  const requests = [];
  page.on('request', (request) => requests.push(request.url()));
  await page.goto('/');
  await page.getByRole('heading', { name: 'Evaluations', level: 1 }).waitFor();
  await page.locator('.refresh-status', { hasText: 'Updated' }).waitFor();
  const foreign = requests.filter((url) => !url.startsWith(BASE));
  assert.deepEqual(foreign, [], 'every request goes to the service itself');
});

test('a form error from the API is shown at the field it names', async () => {
  // tasks[1] → the tasks input.
  await fillForm({ tasks: 'lmeval_aas_mc ../etc/passwd', limit: 3 });
  await page.getByRole('button', { name: 'Submit evaluation' }).click();
  const tasksError = page.locator('#err-tasks');
  await tasksError.waitFor({ state: 'visible' });
  assert.match(await tasksError.textContent(), /\S/);
  assert.equal(await page.getByLabel('Tasks').getAttribute('aria-invalid'), 'true');
  assert.match(await page.getByLabel('Tasks').getAttribute('aria-describedby'), /err-tasks/);
  assert.ok(await page.getByLabel('Tasks').evaluate((el) => el === document.activeElement), 'focus moves to the field in error');
  assert.equal(await page.locator('#form-error').isVisible(), false, 'no general error when a field is named');

  // labels.team → the labels rows; the tasks error is cleared on the next attempt.
  await page.getByLabel('Tasks').fill('lmeval_aas_mc');
  await page.locator('#field-labels .kv-key').first().fill('team');
  await page.locator('#field-labels .kv-value').first().fill('has spaces');
  await page.getByRole('button', { name: 'Submit evaluation' }).click();
  await page.locator('#err-labels').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#err-tasks').isVisible(), false);
  assert.equal(await page.locator('#field-labels .kv-value').first().getAttribute('aria-invalid'), 'true');

  // model_args.api_key → the model_args row with that key.
  await page.locator('#field-labels .kv-value').first().fill('nlp');
  await page.locator('#field-model_args .kv-key').first().fill('api_key');
  await page.locator('#field-model_args .kv-value').first().fill('sk-123');
  await page.getByRole('button', { name: 'Submit evaluation' }).click();
  await page.locator('#err-model_args').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#err-labels').isVisible(), false);
  assert.match(page.url(), /#\/new$/, 'nothing was submitted');
  await page.locator('#field-model_args .kv-key').first().fill('');
  await page.locator('#field-model_args .kv-value').first().fill('');

  // limit → the limit input; shown for the screenshot.
  await page.getByLabel('Limit').fill('0');
  await page.getByRole('button', { name: 'Submit evaluation' }).click();
  await page.locator('#err-limit').waitFor({ state: 'visible' });
  assert.equal(await page.getByLabel('Limit').getAttribute('aria-invalid'), 'true');
  await shot('02-form-error.png');
});

test('every form control has an accessible name', async () => {
  await freshPage('/#/new');
  await page.getByRole('heading', { name: 'New evaluation' }).waitFor();
  const unnamed = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.textContent.trim()))
    .map((el) => el.outerHTML.slice(0, 80)));
  assert.deepEqual(unnamed, []);
  // Keyboard: the first Tab lands on the skip link, which moves focus into <main>.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
});

test('dry run shows the exact lm_eval command and creates nothing', async () => {
  const before = await apiJson('/api/v1/evaluations?page_size=500');
  await fillForm({ tasks: 'lmeval_aas_mc, lmeval_aas_gen', limit: 3, modelArgs: { pretrained: 'tiny' }, genKwargs: { temperature: 0 }, labels: { team: 'nlp' } });
  await page.getByRole('button', { name: 'Dry run' }).click();
  const command = page.locator('#dry-run-command');
  await command.waitFor();
  const text = await command.textContent();
  assert.match(text, /lm_eval/);
  assert.match(text, /--model dummy/);
  assert.match(text, /lmeval_aas_mc,lmeval_aas_gen/);
  assert.match(text, /pretrained=tiny/);
  assert.match(text, /--limit 3/);
  assert.match(page.url(), /#\/new$/);
  await shot('03-dry-run.png');
  const afterList = await apiJson('/api/v1/evaluations?page_size=500');
  assert.equal(afterList.items.length, before.items.length, 'a dry run creates nothing');
});

test('submit through the form, watch it reach succeeded in the list, open it', async () => {
  await fillForm({ tasks: 'lmeval_aas_mc', limit: 4, labels: { run: 'a' } });
  submitted.a = await submitForm();
  await page.getByRole('link', { name: 'Evaluations', exact: true }).click();
  await page.getByRole('heading', { name: 'Evaluations', level: 1 }).waitFor();
  const row = page.locator(`#evaluations tr[data-id="${submitted.a}"]`);
  await row.waitFor();
  assert.notEqual(await row.getAttribute('data-state'), 'succeeded', 'still under way when the list first shows it');
  await row.evaluate((r) => { r.dataset.marker = 'kept'; });
  // Reaches succeeded without a reload: the same row element (still carrying our marker) updates.
  await page.locator(`#evaluations tr[data-id="${submitted.a}"][data-state="succeeded"]`).waitFor({ timeout: RUN_TIMEOUT });
  assert.equal(await row.getAttribute('data-marker'), 'kept', 'the list refreshed in place');
  const rowText = await row.textContent();
  assert.match(rowText, /dummy/);
  assert.match(rowText, /lmeval_aas_mc/);
  assert.match(rowText, /100%/);
  assert.match(rowText, /ago/);
  assert.match(rowText, /run=a/);

  // Open it from the list: command, timestamps, the whole log, metrics, results link.
  await row.getByRole('link').click();
  await page.waitForURL(new RegExp(`#/evaluations/${submitted.a}$`));
  await page.locator('#log[data-ended="true"]').waitFor({ timeout: RUN_TIMEOUT });
  assert.match(await page.locator('#log').textContent(), /lmeval_aas_mc/, 'the log is lm_eval\'s output');
  assert.match(await page.locator('#command').textContent(), /lm_eval run --model dummy .*--tasks lmeval_aas_mc .*--limit 4/);
  assert.match(await page.locator('#summary').textContent(), /Finished.*took/);
  const metricText = await page.locator('#metrics-table').textContent();
  assert.match(metricText, /lmeval_aas_mc/);
  assert.match(metricText, /acc_norm/);
  const href = await page.locator('#download-results').getAttribute('href');
  assert.equal(href, `/api/v1/evaluations/${submitted.a}/results`);
  const results = await apiJson(href);
  assert.ok(results.results?.lmeval_aas_mc, 'the link serves the results JSON');
  assert.equal(await page.locator('#cancel-button').count(), 0, 'no cancel button once it ended');
});

test('detail page: log lines arrive live over SSE, the stream stops at the end, metrics appear', async () => {
  await fillForm({ tasks: 'lmeval_aas_mc lmeval_aas_gen', limit: 5, labels: { run: 'b' } });
  submitted.b = await submitForm();
  // Lines are shown while the evaluation is still under way …
  await page.waitForFunction(() => {
    const log = document.querySelector('#log');
    return log.textContent.split('\n').filter(Boolean).length >= 1 && log.dataset.ended !== 'true';
  }, null, { timeout: RUN_TIMEOUT });
  const state = await page.locator('#detail-state .badge').textContent();
  assert.ok(['pending', 'running'].includes(state), `live while ${state}`);
  assert.equal(await page.locator('#cancel-button').count(), 1, 'cancel is offered while it runs');
  // … then the stream ends (EventSource closed on `end`) and the metrics table appears.
  await page.locator('#log[data-ended="true"]').waitFor({ timeout: RUN_TIMEOUT });
  assert.equal(await page.locator('#log-status').textContent(), 'Log ended');
  await page.locator('#detail-state .state-succeeded').waitFor({ timeout: RUN_TIMEOUT });
  // The poll that saw `succeeded` must not have reopened (and so emptied) the ended stream.
  assert.equal(await page.locator('#log-status').textContent(), 'Log ended', 'the ended log is not streamed again');
  const metricText = await page.locator('#metrics-table').textContent();
  assert.match(metricText, /lmeval_aas_gen/);
  assert.match(metricText, /exact_match/);
  const atEnd = await page.locator('#log').evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 30);
  assert.ok(atEnd, 'the log auto-scrolls to its end');
  assert.ok(await page.locator('#log').evaluate((el) => el.textContent.split('\n').filter(Boolean).length) >= 3);
  await shot('04-detail.png');
});

test('the list: newest first, filters by state and label', async () => {
  await page.getByRole('link', { name: 'Evaluations', exact: true }).click();
  await page.getByRole('heading', { name: 'Evaluations', level: 1 }).waitFor();
  await page.locator(`#evaluations tr[data-id="${submitted.b}"][data-state="succeeded"]`).waitFor();
  const ids = await page.locator('#evaluations tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.id));
  assert.ok(ids.indexOf(submitted.b) < ids.indexOf(submitted.a), 'newest first');
  assert.match(await page.locator(`#evaluations tr[data-id="${submitted.b}"]`).textContent(), /lmeval_aas_mc, lmeval_aas_gen/);
  await shot('01-list.png');

  await page.getByLabel('Labels').fill('run=a');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.waitForFunction((b) => !document.querySelector(`#evaluations tr[data-id="${b}"]`), submitted.b);
  assert.equal(await page.locator(`#evaluations tr[data-id="${submitted.a}"]`).count(), 1);
  assert.match(page.url(), /label=run%3Da/);
  await page.getByLabel('Labels').fill('');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.getByLabel('State').selectOption('failed');
  await page.waitForFunction((a) => !document.querySelector(`#evaluations tr[data-id="${a}"]`), submitted.a);
  await page.getByLabel('State').selectOption('');
  await page.locator(`#evaluations tr[data-id="${submitted.a}"]`).waitFor();
});

test('compare two evaluations picked in the list: side-by-side table and a bar chart per metric', async () => {
  await page.goto('/#/');
  for (const id of [submitted.a, submitted.b]) {
    await page.locator(`#evaluations tr[data-id="${id}"] input.select`).check();
  }
  await page.getByRole('button', { name: 'Compare selected' }).click();
  await page.waitForURL(/#\/compare\?ids=/);
  const table = page.locator('#compare-table');
  await table.waitFor();
  const headers = await table.locator('thead th').allTextContents();
  assert.ok(headers.some((t) => t.includes(submitted.a.slice(0, 8))) && headers.some((t) => t.includes(submitted.b.slice(0, 8))));
  const tableText = await table.textContent();
  assert.match(tableText, /acc_norm/);
  assert.match(tableText, /exact_match/, 'metrics only one of them has are listed too');
  // One chart per task/filter/metric, each with a bar per evaluation that has the metric.
  const charts = page.locator('#charts figure');
  assert.ok(await charts.count() >= 3, 'charts for acc, acc_norm and exact_match');
  const accChart = charts.filter({ hasText: 'lmeval_aas_mc · acc' }).first();
  assert.equal(await accChart.locator('rect.bar').count(), 2);
  assert.equal(await accChart.locator('svg').getAttribute('role'), 'img');
  await shot('05-compare.png');

  // The picker on the compare page leads to the same comparison.
  await page.goto('/#/compare');
  await page.locator(`#pick-${submitted.a}`).check();
  await page.getByRole('button', { name: 'Compare', exact: true }).click();
  await page.locator('#picker-error').waitFor({ state: 'visible' });
  await page.locator(`#pick-${submitted.b}`).check();
  await page.getByRole('button', { name: 'Compare', exact: true }).click();
  await page.locator('#compare-table').waitFor();
});

test('cancel a running evaluation, then delete it', async () => {
  await fillForm({ tasks: 'lmeval_aas_slow', labels: { run: 'cancel-me' } });
  const id = await submitForm();
  await page.locator('#detail-state .state-running').waitFor({ timeout: RUN_TIMEOUT });
  await page.getByRole('button', { name: 'Cancel' }).click();
  await page.locator('#detail-state .state-cancelled').waitFor({ timeout: 60_000 });
  await page.locator('#log[data-ended="true"]').waitFor({ timeout: 60_000 });
  page.once('dialog', (dialog) => dialog.accept());
  await page.getByRole('button', { name: 'Delete' }).click();
  await page.waitForURL(/#\/$/);
  const gone = await fetch(new URL(`/api/v1/evaluations/${id}`, BASE));
  assert.equal(gone.status, 404);
});

/** The bytes a click on `link` downloads. */
async function downloaded(link) {
  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  return readFileSync(await download.path());
}

/** The samples table's doc ids and one metric's values, row by row. */
async function sampleRows(metric) {
  return page.locator('#samples-table tbody tr').evaluateAll((rows, m) => rows.map((r) => ({
    doc: r.dataset.docId, value: r.querySelector(`td[data-metric="${m}"]`)?.textContent,
  })), metric);
}

/** Waits until the samples view has the page it asked for (or the problem instead). */
async function samplesLoaded() {
  await page.waitForFunction(() => document.querySelector('#samples-status')?.textContent !== 'Loading…');
}

test('detail page: artifacts download with their listed SHA-256; samples per task, wrong only, paged, shown as text', async () => {
  // An inline task whose target is markup: lmeval_aas_gen's documents scored by log-likelihood (perplexity,
  // a metric that is not 0 or 1, so "wrong only" means nothing for it and the API answers 422).
  const hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
  const inline = [
    `include: ${join(TASKS, 'lmeval_aas', 'lmeval_aas_gen.yaml')}`,
    'task: lmeval_aas_hostile',
    'output_type: loglikelihood',
    `doc_to_target: ${JSON.stringify(` ${hostile}{{answer}}`)}`,
    'metric_list:',
    '  - metric: perplexity',
    '    aggregation: perplexity',
    '    higher_is_better: false',
  ].join('\n');
  await fillForm({ tasks: 'lmeval_aas_mc lmeval_aas_gen lmeval_aas_hostile', limit: 10, labels: { run: 'samples' } });
  await page.locator('.inline-name').first().fill('hostile.yaml');
  await page.locator('.inline-yaml').first().fill(inline);
  await page.getByLabel('Other request fields (JSON)').fill('{"log_samples": true}');
  const id = submitted.samples = await submitForm();
  await page.locator('#artifacts').getByText('Artifacts appear when the evaluation ends.').waitFor();
  await page.locator('#detail-state .state-succeeded').waitFor({ timeout: RUN_TIMEOUT });

  // Artifacts: every file listed, each a link whose download hashes to the SHA-256 shown beside it.
  const artifacts = page.locator('#artifacts-table');
  await artifacts.waitFor();
  const paths = await artifacts.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.path));
  for (const path of ['results.json', 'log.txt', 'manifest.json', 'samples/lmeval_aas_mc.jsonl', 'samples/lmeval_aas_gen.jsonl', 'samples/lmeval_aas_hostile.jsonl']) {
    assert.ok(paths.includes(path), `${path} is listed among ${paths}`);
  }
  for (const path of ['samples/lmeval_aas_mc.jsonl', 'results.json']) {
    const row = artifacts.locator(`tr[data-path="${path}"]`);
    const sha = row.locator('td.sha');
    const listed = await sha.getAttribute('data-sha256');
    assert.match(listed, /^[0-9a-f]{64}$/);
    assert.equal(await sha.textContent(), listed.slice(0, 12), 'a short SHA-256 is shown');
    const link = row.getByRole('link', { name: path });
    assert.equal(await link.getAttribute('href'), `/api/v1/evaluations/${id}/artifacts/${path}`);
    const bytes = await downloaded(link);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), listed, `${path}: the downloaded bytes hash to the listed SHA-256`);
    assert.equal(await row.locator('td.num').getAttribute('title'), `${bytes.length} bytes`);
  }
  assert.match(await artifacts.locator('tr[data-path="samples/lmeval_aas_mc.jsonl"]').textContent(), /lmeval_aas_mc.*\d+(\.\d)? (B|KiB)/);
  const archive = gunzipSync(await downloaded(page.getByRole('link', { name: 'Download all (.tar.gz)' })));
  assert.ok(archive.includes('samples/lmeval_aas_hostile.jsonl') && archive.includes('manifest.json'), 'the archive holds the listed files');
  const manifest = JSON.parse(await downloaded(page.getByRole('link', { name: 'Manifest (JSON)' })));
  assert.equal(manifest.request.log_samples, true);
  assert.equal(manifest.inline_tasks_sha256['hostile.yaml'], createHash('sha256').update(inline).digest('hex'));

  // Samples: a task's documents, targets, responses and metric values.
  await page.getByLabel('Task', { exact: true }).selectOption('lmeval_aas_mc');
  await samplesLoaded();
  const all = await sampleRows('acc');
  assert.equal(all.length, 10, 'limit 10: ten samples on one page of 20');
  assert.deepEqual(all.map((r) => r.doc), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  assert.ok(all.every((r) => r.value === '0' || r.value === '1'), `acc is 0 or 1: ${JSON.stringify(all)}`);
  assert.ok(await page.getByRole('button', { name: 'Next →' }).isDisabled(), 'one page only');
  const table = page.locator('#samples-table');
  assert.deepEqual(await table.locator('thead th').allTextContents(), ['Doc', 'Document', 'Target', 'Model response', 'acc', 'acc_norm']);
  const first = table.locator('tbody tr').first();
  assert.match(await first.locator('.sample-doc').textContent(), /country: France · choices: \["Paris","Madrid","Canberra","Stockholm"\] · answer: 0/);
  assert.equal(await first.locator('.sample-target').textContent(), '0');
  assert.match(await first.locator('.sample-response').textContent(), /^choice [0-3] · log-likelihoods -?\d/);

  // Paged by 5: forward to the second page, back to the first.
  await page.getByLabel('Rows per page').selectOption('5');
  await samplesLoaded();
  assert.deepEqual((await sampleRows('acc')).map((r) => r.doc), ['0', '1', '2', '3', '4']);
  assert.match(await page.locator('#samples-status').textContent(), /page 1, samples 1–5$/);
  await page.getByRole('button', { name: 'Next →' }).click();
  await samplesLoaded();
  assert.deepEqual((await sampleRows('acc')).map((r) => r.doc), ['5', '6', '7', '8', '9']);
  assert.match(await page.locator('#samples-status').textContent(), /page 2, samples 6–10 \(last page\)$/);
  assert.ok(await page.getByRole('button', { name: 'Next →' }).isDisabled(), 'no third page');
  assert.ok(await page.getByRole('button', { name: '← Previous' }).evaluate((el) => el === document.activeElement), 'focus stays on the pager');
  await page.getByRole('button', { name: '← Previous' }).click();
  await samplesLoaded();
  assert.deepEqual((await sampleRows('acc')).map((r) => r.doc), ['0', '1', '2', '3', '4']);
  assert.ok(await page.getByRole('button', { name: '← Previous' }).isDisabled());

  // Wrong only: exactly the samples acc scored 0, across the filtered pages.
  await page.getByLabel('Wrong only').check();
  await samplesLoaded();
  assert.match(await page.locator('#samples-wrong-help').textContent(), /acc is 0/);
  const wrong = [];
  for (;;) {
    const rows = await sampleRows('acc');
    assert.ok(rows.every((r) => r.value === '0'), `every shown row's acc is 0: ${JSON.stringify(rows)}`);
    wrong.push(...rows.map((r) => r.doc));
    if (await page.getByRole('button', { name: 'Next →' }).isDisabled()) break;
    await page.getByRole('button', { name: 'Next →' }).click();
    await samplesLoaded();
  }
  assert.deepEqual(wrong, all.filter((r) => r.value === '0').map((r) => r.doc), 'the wrong ones, no more, no fewer');

  // The generated task (still wrong only): the dummy model never gets the arithmetic right.
  await page.getByLabel('Task', { exact: true }).selectOption('lmeval_aas_gen');
  await samplesLoaded();
  const gen = await sampleRows('exact_match');
  assert.equal(gen.length, 5);
  assert.ok(gen.every((r) => r.value === '0'));
  assert.match(await table.locator('tbody tr').first().locator('.sample-response').textContent(), /\S/);

  // Markup in a target is text: nothing it names is created or run. "Wrong only" means nothing for
  // perplexity: the API's problem detail is shown.
  await page.getByLabel('Task', { exact: true }).selectOption('lmeval_aas_hostile');
  await page.locator('#samples-error').waitFor({ state: 'visible' });
  assert.match(await page.locator('#samples-error').textContent(), /perplexity is -?[\d.]+ for a sample, not 0 or 1/);
  assert.equal(await page.locator('#samples-table').count(), 0);
  await page.getByLabel('Wrong only').uncheck();
  await samplesLoaded();
  assert.equal(await page.locator('#samples-error').isVisible(), false);
  const target = await table.locator('tbody tr').first().locator('.sample-target').textContent();
  assert.equal(target, ` ${hostile}2`, 'the target is shown as the text it is');
  assert.match(await table.locator('tbody tr').first().locator('.sample-response').textContent(), /^log-likelihood -?\d/);
  assert.equal(await page.locator('#samples img, #samples script').count(), 0, 'no element made from sample text');
  assert.equal(await page.evaluate(() => window.__pwned), undefined, 'no sample text ran');
  await page.getByLabel('Task', { exact: true }).selectOption('lmeval_aas_mc');
  await samplesLoaded();
  await shot('09-samples.png');

  // An evaluation without log_samples: its artifacts, and a note instead of the samples view.
  await page.goto(`/#/evaluations/${submitted.a}`);
  await page.locator(`#artifacts-table tr[data-path="results.json"]`).waitFor();
  assert.equal(await page.locator('#artifacts-table tr[data-path^="samples/"]').count(), 0);
  assert.match(await page.locator('#samples-note').textContent(), /did not set log_samples/);
  assert.equal(await page.locator('#samples-task, #samples-table').count(), 0);
});

test('phone width: list, detail, compare and form fit without sideways scrolling', async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, baseURL: BASE });
  const p = await phone.newPage();
  watchErrors(p);
  await p.goto('/');
  await p.locator(`#evaluations tr[data-id="${submitted.a}"][data-state="succeeded"]`).waitFor();
  // Wider content would stretch a phone's layout viewport (and shrink everything on it).
  const noOverflow = async (what) => {
    const width = await p.evaluate(() => [window.innerWidth, document.documentElement.scrollWidth]);
    assert.deepEqual(width, [390, 390], `${what}: no sideways scrolling (innerWidth, scrollWidth)`);
  };
  await noOverflow('list');
  await shot('06-list-phone.png', p);
  await p.goto(`/#/evaluations/${submitted.b}`);
  await p.locator('#metrics-table').waitFor();
  await noOverflow('detail');
  await shot('07-detail-phone.png', p);
  await p.goto(`/#/evaluations/${submitted.samples}`);
  await p.locator('#samples-table').waitFor();
  await noOverflow('detail with samples');
  await shot('10-samples-phone.png', p);
  await p.goto(`/#/compare?ids=${submitted.a},${submitted.b}`);
  await p.locator('#charts svg').first().waitFor();
  await noOverflow('compare');
  await shot('08-compare-phone.png', p);
  await p.goto('/#/new');
  await p.getByRole('heading', { name: 'New evaluation' }).waitFor();
  await noOverflow('form');
  await phone.close();
});

test('no script errors on any page', () => {
  assert.deepEqual(pageErrors, []);
});
