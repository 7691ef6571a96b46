// One evaluation: state, timestamps, the exact command, the live log (SSE), actions, metrics, and once it
// ended its artifacts and per-sample records (outputs.js).
import { api, session } from '/ui/api.js';
import { downloadLink, outputSections } from '/ui/outputs.js';
import { h, TERMINAL, stateBadge, progressBar, shortId, timestamp, duration, shellQuote, copyButton, formatNumber, announce } from '/ui/dom.js';

const POLL_MS = 2000;
const MAX_LOG_CHUNKS = 2000; // text nodes (one per batch of lines) kept in the log view

export function metricsTable(metrics, caption) {
  if (!metrics || !metrics.length) return h('p', { class: 'muted' }, 'No metrics.');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'metrics', id: 'metrics-table' },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Task · metric (filter)'), h('th', { scope: 'col', class: 'num' }, 'Shots'),
      h('th', { scope: 'col', class: 'num' }, 'Value ± std. error'))),
    h('tbody', {}, metrics.map((m) => h('tr', {},
      h('th', { scope: 'row' }, h('span', { class: 'task-name' }, m.task), ' ',
        h('span', { class: 'metric-name' }, m.metric, m.filter && m.filter !== 'none' ? ` (${m.filter})` : '')),
      h('td', { class: 'num' }, m.n_shot ?? '—'),
      h('td', { class: 'num' }, formatNumber(m.value), m.stderr == null ? null : h('span', { class: 'stderr' }, ` ± ${formatNumber(m.stderr)}`)))))));
}

export function detailView(main, { args: [id] }) {
  document.title = `Evaluation ${shortId(id)} · lm-eval-aas`;
  let stopped = false;
  let timer = null;
  let source = null;
  let evaluation = null;
  let logEnded = false;

  const heading = h('h1', {}, 'Evaluation ', h('span', { class: 'mono' }, shortId(id)));
  const badgeSlot = h('span', { id: 'detail-state' });
  const actions = h('div', { class: 'actions' });
  const errorBox = h('div', { class: 'alert', role: 'alert', hidden: true });
  const summary = h('dl', { class: 'summary', id: 'summary' });
  const progressSlot = h('div', { class: 'detail-progress' });
  const commandPre = h('pre', { class: 'command', id: 'command', tabindex: '0', 'aria-label': 'Command' });
  const logPre = h('pre', { class: 'log', id: 'log', tabindex: '0', role: 'log', 'aria-label': 'Log output', 'aria-live': 'off' });
  const logStatus = h('span', { class: 'muted', id: 'log-status', role: 'status' }, 'Connecting…');
  const followBox = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const metricsSlot = h('div', { id: 'metrics' }, h('p', { class: 'muted' }, 'Metrics appear when the evaluation succeeds.'));
  const outputs = outputSections(id);

  main.append(
    h('p', { class: 'breadcrumb' }, h('a', { href: '#/' }, '← Evaluations')),
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, heading, badgeSlot), actions),
    errorBox,
    progressSlot,
    summary,
    h('section', { 'aria-labelledby': 'cmd-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'cmd-title' }, 'Command'), copyButton(() => commandPre.textContent, 'Copy command')),
      commandPre),
    h('section', { 'aria-labelledby': 'log-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'log-title' }, 'Log'), logStatus,
        h('label', { class: 'inline-check', for: 'log-follow' }, followBox, ' Auto-scroll')),
      logPre),
    h('section', { 'aria-labelledby': 'metrics-title' }, h('h2', { id: 'metrics-title' }, 'Metrics'), metricsSlot),
    ...outputs.elements);

  // Reading back up the log turns auto-scroll off; scrolling to the end turns it on again.
  logPre.addEventListener('scroll', () => {
    const atEnd = logPre.scrollHeight - logPre.scrollTop - logPre.clientHeight < 24;
    if (followBox.checked !== atEnd && document.activeElement !== followBox) followBox.checked = atEnd;
  });
  followBox.addEventListener('change', () => { if (followBox.checked) logPre.scrollTop = logPre.scrollHeight; });

  // Lines are batched per animation frame: a burst of thousands costs one layout, not thousands.
  let pending = [];
  let flushQueued = false;
  function flush() {
    flushQueued = false;
    if (!pending.length) return;
    logPre.append(pending.join('\n') + '\n');
    pending = [];
    while (logPre.childNodes.length > MAX_LOG_CHUNKS) logPre.firstChild.remove();
    if (followBox.checked) logPre.scrollTop = logPre.scrollHeight;
  }
  function appendLine(line) {
    pending.push(line);
    if (flushQueued) return;
    flushQueued = true;
    requestAnimationFrame(flush);
  }

  function logEnd() {
    flush();
    logEnded = true;
    logStatus.textContent = 'Log ended';
    logPre.dataset.ended = 'true';
  }
  function logBroke() {
    if (stopped || logEnded) return;
    logStatus.textContent = 'Disconnected; retrying…';
    setTimeout(() => { if (!stopped && !logEnded) openLog(); }, 3000);
  }

  function openLog() {
    if (source || stopped || logEnded) return;
    logStatus.textContent = 'Streaming…';
    pending = [];
    logPre.replaceChildren();
    if (session.token()) {
      // With a token the log comes through fetch, which can send it (EventSource cannot).
      const aborter = new AbortController();
      source = { close: () => aborter.abort() };
      api.followLog(id, appendLine, aborter.signal).then(() => { source = null; logEnd(); }, () => { source = null; logBroke(); });
      return;
    }
    source = new EventSource(api.logsUrl(id, { follow: true }));
    source.onmessage = (event) => appendLine(event.data);
    source.addEventListener('end', () => {
      source.close();
      source = null;
      logEnd();
    });
    source.onerror = () => {
      // The stream broke before `end` (service restart, network): reopen from the start later
      // rather than letting EventSource replay the whole log onto what is shown.
      if (!source) return;
      source.close();
      source = null;
      logBroke();
    };
  }

  function renderActions() {
    const buttons = [];
    if (!TERMINAL.has(evaluation.state)) {
      buttons.push(h('button', { type: 'button', class: 'button danger-outline', id: 'cancel-button', onclick: cancel }, 'Cancel'));
    }
    if (evaluation.state === 'succeeded') {
      buttons.push(downloadLink(api.resultsUrl(id), `results-${id}.json`, 'Download results JSON', { class: 'button secondary', id: 'download-results' }, (error) => {
        errorBox.hidden = false;
        errorBox.textContent = `Could not download the results: ${error.message}`;
      }));
      buttons.push(h('a', { class: 'button secondary', href: `#/compare?ids=${id}` }, 'Compare…'));
    }
    buttons.push(h('button', { type: 'button', class: 'button danger', id: 'delete-button', onclick: remove }, 'Delete'));
    const focusedId = document.activeElement?.id;
    actions.replaceChildren(...buttons);
    if (focusedId && actions.querySelector(`#${focusedId}`)) actions.querySelector(`#${focusedId}`).focus();
  }

  function row(term, ...value) {
    return [h('dt', {}, term), h('dd', {}, ...value)];
  }

  function render() {
    badgeSlot.replaceChildren(stateBadge(evaluation.state));
    const r = evaluation.request;
    const labels = Object.entries(evaluation.labels || {});
    summary.replaceChildren(
      ...row('ID', h('span', { class: 'mono' }, evaluation.id)),
      ...row('Model', r.model, r.model_args && Object.keys(r.model_args).length
        ? h('span', { class: 'muted' }, ` (${Object.entries(r.model_args).map(([k, v]) => `${k}=${v}`).join(', ')})`) : null),
      ...row('Tasks', r.tasks.join(', ')),
      ...(evaluation.reason ? row('Reason', h('span', { class: 'mono' }, evaluation.reason)) : []),
      ...(evaluation.message ? row('Message', evaluation.message) : []),
      ...row('Created', timestamp(evaluation.created_at)),
      ...row('Started', timestamp(evaluation.started_at), evaluation.started_at && !evaluation.finished_at ? ` (running ${duration(evaluation.started_at)})` : ''),
      ...row('Finished', timestamp(evaluation.finished_at), evaluation.finished_at && evaluation.started_at ? ` (took ${duration(evaluation.started_at, evaluation.finished_at)})` : ''),
      ...(labels.length ? row('Labels', h('span', { class: 'labels' }, labels.map(([k, v]) => h('span', { class: 'label-chip' }, `${k}=${v}`)))) : []));
    progressSlot.replaceChildren(progressBar(evaluation));
    commandPre.replaceChildren(h('code', {}, shellQuote(evaluation.command)));
    renderActions();
    if (evaluation.state === 'succeeded' && evaluation.metrics) {
      metricsSlot.replaceChildren(metricsTable(evaluation.metrics, `Metrics of evaluation ${shortId(id)}`));
    } else if (TERMINAL.has(evaluation.state)) {
      metricsSlot.replaceChildren(h('p', { class: 'muted' }, `No metrics: the evaluation ${evaluation.state}.`));
    }
    if (TERMINAL.has(evaluation.state)) outputs.ended(evaluation);
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const previous = evaluation?.state;
      evaluation = await api.get(id);
      if (stopped) return;
      errorBox.hidden = true;
      render();
      if (previous && previous !== evaluation.state) announce(`Evaluation ${evaluation.state}`);
      openLog();
      if (TERMINAL.has(evaluation.state)) return;
    } catch (error) {
      if (stopped) return;
      errorBox.hidden = false;
      errorBox.textContent = error.status === 404 ? 'No such evaluation (it may have been deleted).' : `Could not load the evaluation: ${error.message}`;
      if (error.status === 404) { logStatus.textContent = ''; return; }
    }
    timer = setTimeout(poll, POLL_MS);
  }

  async function cancel() {
    try {
      await api.cancel(id);
      announce('Cancel requested');
      poll();
    } catch (error) {
      errorBox.hidden = false;
      errorBox.textContent = `Could not cancel: ${error.message}`;
    }
  }

  async function remove() {
    const running = evaluation && !TERMINAL.has(evaluation.state);
    if (!window.confirm(`Delete evaluation ${shortId(id)}${running ? ' (it is still running and will be stopped)' : ''}? Its log and results are removed.`)) return;
    try {
      await api.remove(id);
      announce('Evaluation deleted');
      location.hash = '#/';
    } catch (error) {
      errorBox.hidden = false;
      errorBox.textContent = `Could not delete: ${error.message}`;
    }
  }

  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (source) { source.close(); source = null; }
  };
}
