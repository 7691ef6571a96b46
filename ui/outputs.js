// An ended evaluation's output set on its detail page: the artifacts to download, and each task's per-sample
// records page by page. Sample text comes from datasets and models, so it is only ever set as text.
import { api, session } from '/ui/api.js';
import { h, humanSize, formatNumber } from '/ui/dom.js';

const PAGE_SIZES = [5, 20, 50, 100];
const DEFAULT_PAGE_SIZE = 20;
const CLIP = 140; // characters of a cell shown before "show all"

/** Saves `url` as `name` with the token in the request (a plain link cannot carry it), from memory. */
async function saveWithToken(url, name) {
  const objectUrl = URL.createObjectURL(await api.blob(url));
  h('a', { href: objectUrl, download: name }).click();
  setTimeout(() => URL.revokeObjectURL(objectUrl), 10_000);
}

/** A link that downloads `url`: a plain link without a token, fetched with it otherwise (`onError` hears why not). */
export function downloadLink(url, name, text, attrs = {}, onError = () => {}) {
  return h('a', {
    ...attrs, href: url, download: name,
    onclick: (event) => {
      if (!session.token()) return;
      event.preventDefault();
      saveWithToken(url, name).catch(onError);
    },
  }, text);
}

/** `text` whole when short; else its start, expandable to all of it. */
function clipped(text) {
  if (text.length <= CLIP) return text;
  return h('details', { class: 'clip' },
    h('summary', {}, h('span', { class: 'clip-head' }, `${text.slice(0, CLIP)}…`), h('span', { class: 'clip-more' }, ' show all'),
      h('span', { class: 'clip-less' }, 'show less')),
    h('div', { class: 'clip-full' }, text));
}

/** A path that may wrap after its slashes (and nowhere else). */
const breakable = (path) => path.split('/').flatMap((part, i) => (i ? ['/', h('wbr'), part] : [part]));

const asText = (value) => (typeof value === 'string' ? value : JSON.stringify(value) ?? '');

/** A document as "key: value · key: value". */
function compactDoc(doc) {
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return asText(doc);
  return Object.entries(doc).map(([key, value]) => `${key}: ${asText(value)}`).join(' · ');
}

// lm-eval's loglikelihood answers: [log-likelihood, is-greedy], both as strings.
const isLoglikelihood = (value) => Array.isArray(value) && value.length === 2 && typeof value[0] !== 'object'
  && Number.isFinite(Number(value[0])) && /^(true|false)$/i.test(String(value[1]));

/** `filtered_resps` compactly: the generated text, or the choice a multiple-choice task's scores pick. */
export function compactResponse(value) {
  if (isLoglikelihood(value)) return `log-likelihood ${formatNumber(Number(value[0]), 3)}${/^true$/i.test(String(value[1])) ? ' (greedy)' : ''}`;
  if (Array.isArray(value) && value.length > 1 && value.every(isLoglikelihood)) {
    const scores = value.map(([score]) => Number(score));
    return `choice ${scores.indexOf(Math.max(...scores))} · log-likelihoods ${scores.map((s) => formatNumber(s, 3)).join(', ')}`;
  }
  if (Array.isArray(value) && value.length === 1) return compactResponse(value[0]);
  return asText(value);
}

/**
 * The Artifacts and Samples sections. `elements` go on the page at once; `ended(evaluation)` loads the
 * output set the first time the evaluation is seen ended (the API answers 409 before).
 */
export function outputSections(id) {
  let loaded = false;

  // --- Artifacts ---------------------------------------------------------------------------------------
  const artifactsError = h('div', { class: 'alert', role: 'alert', id: 'artifacts-error', hidden: true });
  const showDownloadError = (error) => {
    artifactsError.hidden = false;
    artifactsError.textContent = `Could not download: ${error.message}`;
  };
  const archiveLink = downloadLink(api.archiveUrl(id), `${id}-artifacts.tar.gz`, 'Download all (.tar.gz)',
    { class: 'button small secondary', id: 'download-archive' }, showDownloadError);
  const manifestLink = downloadLink(api.manifestUrl(id), `manifest-${id}.json`, 'Manifest (JSON)',
    { class: 'button small secondary', id: 'download-manifest' }, showDownloadError);
  const artifactLinks = h('div', { class: 'actions', hidden: true }, archiveLink, manifestLink);
  const artifactsSlot = h('div', { id: 'artifacts' }, h('p', { class: 'muted' }, 'Artifacts appear when the evaluation ends.'));
  const artifactsSection = h('section', { 'aria-labelledby': 'artifacts-title' },
    h('div', { class: 'section-head' }, h('h2', { id: 'artifacts-title' }, 'Artifacts'), artifactLinks),
    artifactsError, artifactsSlot);

  function artifactsTable(items) {
    if (!items.length) return h('p', { class: 'muted' }, 'No artifacts.');
    return h('div', { class: 'table-wrap' }, h('table', { class: 'artifacts', id: 'artifacts-table' },
      h('caption', { class: 'visually-hidden' }, 'Artifacts of this evaluation, each a download link'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Path'), h('th', { scope: 'col', class: 'artifact-task' }, 'Task'),
        h('th', { scope: 'col', class: 'num' }, 'Size'), h('th', { scope: 'col' }, 'SHA-256'))),
      h('tbody', {}, items.map((artifact) => h('tr', { dataset: { path: artifact.path } },
        h('th', { scope: 'row' }, downloadLink(api.artifactUrl(id, artifact.path), artifact.path.split('/').pop(), breakable(artifact.path),
          { class: 'mono artifact-link' }, showDownloadError)),
        h('td', { class: 'artifact-task' }, artifact.task ?? h('span', { class: 'muted' }, '—')),
        h('td', { class: 'num', title: `${artifact.size} bytes` }, humanSize(artifact.size)),
        h('td', { class: 'mono sha', title: artifact.sha256, dataset: { sha256: artifact.sha256 } }, artifact.sha256.slice(0, 12)))))));
  }

  // --- Samples -----------------------------------------------------------------------------------------
  const samplesSlot = h('div', { id: 'samples' }, h('p', { class: 'muted' }, 'Per-sample records appear when the evaluation ends.'));
  const samplesSection = h('section', { 'aria-labelledby': 'samples-title' }, h('h2', { id: 'samples-title' }, 'Samples'), samplesSlot);

  function samplesBrowser(tasks) {
    let pageSize = DEFAULT_PAGE_SIZE;
    let current = null; // this page's URL
    let next = null; // the next page's, from the Link header
    let earlier = []; // the URLs of the pages before this one
    let request = 0; // only the latest request's answer is shown

    const taskSelect = h('select', { id: 'samples-task' }, tasks.map((task) => h('option', { value: task }, task)));
    const sizeSelect = h('select', { id: 'samples-page-size' },
      PAGE_SIZES.map((size) => h('option', { value: String(size), selected: size === pageSize }, String(size))));
    const wrongOnly = h('input', { type: 'checkbox', id: 'samples-wrong', 'aria-describedby': 'samples-wrong-help' });
    const wrongHelp = h('span', { class: 'help', id: 'samples-wrong-help' }, 'Rows the task\'s first metric scores 0.');
    const previousButton = h('button', { type: 'button', class: 'button small secondary', id: 'samples-previous', disabled: true }, '← Previous');
    const nextButton = h('button', { type: 'button', class: 'button small secondary', id: 'samples-next', disabled: true }, 'Next →');
    const status = h('p', { class: 'muted samples-status', id: 'samples-status', role: 'status' });
    const error = h('div', { class: 'alert', role: 'alert', id: 'samples-error', hidden: true });
    const tableSlot = h('div', { class: 'table-wrap' });

    function firstPage() {
      earlier = [];
      load(api.samplesUrl(id, { task: taskSelect.value, pageSize, outcome: wrongOnly.checked ? 'incorrect' : '' }));
    }

    async function load(url) {
      const mine = ++request;
      current = url;
      previousButton.disabled = true;
      nextButton.disabled = true;
      status.textContent = 'Loading…';
      try {
        const page = await api.samplesPage(url);
        if (mine !== request) return;
        error.hidden = true;
        next = page.next;
        render(page.records);
      } catch (e) {
        if (mine !== request) return;
        next = null;
        error.hidden = false;
        error.textContent = e.status === 422 ? e.message : `Could not load the samples: ${e.message}`;
        status.textContent = '';
        tableSlot.replaceChildren();
        previousButton.disabled = !earlier.length;
      }
    }

    function render(records) {
      const page = earlier.length + 1;
      const first = earlier.length * pageSize + 1;
      const task = taskSelect.value;
      previousButton.disabled = !earlier.length;
      nextButton.disabled = !next;
      const firstMetric = records.find((r) => Array.isArray(r.metrics) && r.metrics.length)?.metrics[0];
      if (firstMetric) wrongHelp.textContent = `Rows whose ${firstMetric} is 0.`;
      if (!records.length) {
        status.textContent = wrongOnly.checked ? `No wrong samples of ${task}.` : `No samples of ${task}.`;
        tableSlot.replaceChildren();
        return;
      }
      status.textContent = `${task}: page ${page}, ${wrongOnly.checked ? 'wrong ' : ''}samples ${first}–${first + records.length - 1}${next ? '' : ' (last page)'}`;
      const metrics = [...new Set(records.flatMap((r) => (Array.isArray(r.metrics) ? r.metrics : [])))];
      tableSlot.replaceChildren(h('table', { class: 'samples', id: 'samples-table', dataset: { task, page: String(page) } },
        h('caption', { class: 'visually-hidden' }, `Samples of ${task}, page ${page}`),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col', class: 'num' }, 'Doc'), h('th', { scope: 'col' }, 'Document'), h('th', { scope: 'col' }, 'Target'),
          h('th', { scope: 'col' }, 'Model response'),
          metrics.map((metric) => h('th', { scope: 'col', class: 'num mono' }, metric)))),
        h('tbody', {}, records.map((record) => h('tr', { dataset: { docId: String(record.doc_id) } },
          h('th', { scope: 'row', class: 'num' }, String(record.doc_id ?? '—')),
          h('td', { class: 'sample-doc' }, clipped(compactDoc(record.doc))),
          h('td', { class: 'sample-target' }, clipped(asText(record.target))),
          h('td', { class: 'sample-response' }, clipped(compactResponse(record.filtered_resps))),
          metrics.map((metric) => {
            const value = record[metric];
            return h('td', { class: 'num', dataset: { metric } }, typeof value === 'number' ? formatNumber(value) : clipped(asText(value ?? '—')));
          }))))));
    }

    taskSelect.addEventListener('change', firstPage);
    sizeSelect.addEventListener('change', () => { pageSize = Number(sizeSelect.value); firstPage(); });
    wrongOnly.addEventListener('change', firstPage);
    nextButton.addEventListener('click', async () => {
      if (!next) return;
      earlier.push(current);
      await load(next);
      if (nextButton.disabled && !previousButton.disabled) previousButton.focus();
    });
    previousButton.addEventListener('click', async () => {
      if (!earlier.length) return;
      await load(earlier.pop());
      if (previousButton.disabled && !nextButton.disabled) nextButton.focus();
    });

    firstPage();
    return h('div', { class: 'samples-browser' },
      h('div', { class: 'filters samples-controls' },
        h('div', { class: 'field' }, h('label', { for: 'samples-task' }, 'Task'), taskSelect),
        h('div', { class: 'field' }, h('label', { for: 'samples-page-size' }, 'Rows per page'), sizeSelect),
        h('div', { class: 'field' }, h('label', { class: 'inline-check', for: 'samples-wrong' }, wrongOnly, ' Wrong only'), wrongHelp)),
      error,
      h('div', { class: 'toolbar' }, previousButton, nextButton, status),
      tableSlot);
  }

  async function ended(evaluation) {
    if (loaded) return;
    loaded = true;
    const logSamples = Boolean(evaluation.request?.log_samples);
    if (!logSamples) {
      samplesSlot.replaceChildren(h('p', { class: 'muted', id: 'samples-note' },
        'No per-sample records: this evaluation did not set log_samples. Submit it again with "log_samples": true to see each document, target and response.'));
    }
    let items;
    try {
      items = (await api.artifacts(id)).items;
    } catch (error) {
      const note = h('p', { class: 'muted' }, `No artifacts: ${error.message}`);
      artifactsSlot.replaceChildren(note);
      if (logSamples) samplesSlot.replaceChildren(h('p', { class: 'muted', id: 'samples-note' }, `No samples: ${error.message}`));
      return;
    }
    artifactLinks.hidden = !items.length;
    artifactsSlot.replaceChildren(artifactsTable(items));
    if (!logSamples) return;
    const tasks = [...new Set(items.map((artifact) => artifact.task).filter(Boolean))];
    samplesSlot.replaceChildren(tasks.length ? samplesBrowser(tasks)
      : h('p', { class: 'muted', id: 'samples-note' }, 'No task left per-sample records.'));
  }

  return { elements: [artifactsSection, samplesSection], ended };
}
