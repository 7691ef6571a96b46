// Compare two or more succeeded evaluations: metrics side by side as a table and a bar chart
// per task/filter/metric. The selection lives in the URL (#/compare?ids=a,b) so it can be shared.
import { api } from '/ui/api.js';
import { h, shortId, age, modelName, formatNumber, announce } from '/ui/dom.js';
import { barChart, PALETTE } from '/ui/chart.js';

export function compareView(main, { params }) {
  document.title = 'Compare · lm-eval-aas';
  let ids = (params.get('ids') || '').split(',').map((s) => s.trim()).filter(Boolean);
  let stopped = false;

  const errorBox = h('div', { class: 'alert', role: 'alert', hidden: true });
  const pickerList = h('div', { class: 'picker-list' }, h('p', { class: 'muted' }, 'Loading succeeded evaluations…'));
  const compareButton = h('button', { type: 'submit', class: 'button', id: 'compare-button' }, 'Compare');
  const pickerNote = h('p', { class: 'field-error', id: 'picker-error', hidden: true });
  const picker = h('form', { class: 'picker', 'aria-labelledby': 'picker-title' },
    h('fieldset', {}, h('legend', { id: 'picker-title' }, 'Succeeded evaluations to compare'), pickerList, pickerNote),
    compareButton);
  const details = h('details', { class: 'picker-details', open: ids.length < 2 }, h('summary', {}, 'Choose evaluations'), picker);
  const results = h('div', { id: 'comparison' });

  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Compare evaluations')), errorBox, details, results);

  picker.addEventListener('submit', (event) => {
    event.preventDefault();
    const chosen = [...pickerList.querySelectorAll('input:checked')].map((c) => c.value);
    if (chosen.length < 2) {
      pickerNote.textContent = 'Choose at least two evaluations.';
      pickerNote.hidden = false;
      pickerList.querySelector('input')?.focus();
      return;
    }
    location.hash = `#/compare?ids=${chosen.join(',')}`;
  });

  async function loadPicker() {
    try {
      const page = await api.list({ state: 'succeeded', pageSize: 200 });
      if (stopped) return;
      if (!page.items.length) {
        pickerList.replaceChildren(h('p', { class: 'muted' }, 'No succeeded evaluations yet.'));
        compareButton.disabled = true;
        return;
      }
      pickerList.replaceChildren(...page.items.map((e) => {
        const inputId = `pick-${e.id}`;
        return h('div', { class: 'pick' },
          h('input', { type: 'checkbox', id: inputId, value: e.id, checked: ids.includes(e.id) }),
          h('label', { for: inputId }, h('span', { class: 'mono' }, shortId(e.id)), ' ', modelName(e), ' · ', e.request.tasks.join(', '), ' ',
            h('span', { class: 'muted' }, age(e.finished_at || e.created_at))));
      }));
    } catch (error) {
      pickerList.replaceChildren(h('p', { class: 'field-error' }, `Could not load evaluations: ${error.message}`));
    }
  }

  async function loadComparison() {
    if (ids.length === 0) {
      results.replaceChildren(h('p', { class: 'muted' }, 'Choose two or more succeeded evaluations above, or tick them in the list.'));
      return;
    }
    results.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    const settled = await Promise.allSettled(ids.map((id) => api.get(id)));
    if (stopped) return;
    const evaluations = [];
    const problems = [];
    settled.forEach((r, i) => {
      if (r.status === 'rejected') problems.push(`${shortId(ids[i])}: ${r.reason.message}`);
      else if (r.value.state !== 'succeeded') problems.push(`${shortId(ids[i])} is ${r.value.state}, not succeeded`);
      else evaluations.push(r.value);
    });
    if (problems.length) { errorBox.hidden = false; errorBox.textContent = `Left out: ${problems.join('; ')}.`; }
    if (evaluations.length < 2) {
      results.replaceChildren(h('p', { class: 'muted' }, 'At least two succeeded evaluations are needed to compare.'));
      details.open = true;
      return;
    }
    renderComparison(evaluations);
    announce(`Comparing ${evaluations.length} evaluations`);
  }

  function renderComparison(evaluations) {
    const series = evaluations.map((e, i) => ({
      evaluation: e,
      color: PALETTE[i % PALETTE.length],
      name: `${modelName(e)} (${shortId(e.id)})`,
      short: shortId(e.id),
    }));
    // Every task/filter/metric any of them has, in first-seen order.
    const keys = new Map();
    for (const { evaluation } of series) {
      for (const m of evaluation.metrics || []) {
        const key = JSON.stringify([m.task, m.filter, m.metric]);
        if (!keys.has(key)) keys.set(key, { task: m.task, filter: m.filter, metric: m.metric });
      }
    }
    const lookup = (evaluation, k) => (evaluation.metrics || []).find((m) => m.task === k.task && m.filter === k.filter && m.metric === k.metric);

    const legend = h('ul', { class: 'legend', 'aria-label': 'Evaluations compared' }, series.map((s) => h('li', {},
      h('span', { class: 'swatch', style: `background: ${s.color}`, 'aria-hidden': 'true' }),
      h('a', { href: `#/evaluations/${s.evaluation.id}` }, s.name), ' ',
      h('span', { class: 'muted' }, `${s.evaluation.request.tasks.join(', ')}${s.evaluation.request.limit != null ? ` · limit ${s.evaluation.request.limit}` : ''}`),
      ' ', h('span', { class: 'labels' }, Object.entries(s.evaluation.labels || {}).map(([k, v]) => h('span', { class: 'label-chip' }, `${k}=${v}`))))));

    const table = h('div', { class: 'table-wrap' }, h('table', { class: 'compare-table', id: 'compare-table' },
      h('caption', { class: 'visually-hidden' }, 'Metrics side by side; the best value in each row is marked'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Task · metric (filter)'),
        series.map((s) => h('th', { scope: 'col', class: 'num' }, h('span', { class: 'swatch', style: `background: ${s.color}`, 'aria-hidden': 'true' }), s.short)))),
      h('tbody', {}, [...keys.values()].map((k) => {
        const values = series.map((s) => lookup(s.evaluation, k));
        const finite = values.map((m) => m?.value).filter(Number.isFinite);
        const best = finite.length > 1 && new Set(finite).size > 1 ? Math.max(...finite) : null;
        return h('tr', {}, h('th', { scope: 'row' }, h('span', { class: 'task-name' }, k.task), ' ',
          h('span', { class: 'metric-name' }, k.metric, k.filter && k.filter !== 'none' ? ` (${k.filter})` : '')),
          values.map((m) => h('td', { class: `num${m && m.value === best ? ' best' : ''}` },
            m ? formatNumber(m.value) : '—',
            m && m.stderr != null ? h('span', { class: 'stderr' }, ` ± ${formatNumber(m.stderr, 3)}`) : null,
            m && m.value === best ? h('span', { class: 'visually-hidden' }, ' (highest)') : null)));
      }))));

    const charts = h('div', { class: 'charts', id: 'charts' }, [...keys.values()].map((k) => {
      const title = `${k.task} · ${k.metric}${k.filter && k.filter !== 'none' ? ` (${k.filter})` : ''}`;
      const bars = series.map((s) => {
        const m = lookup(s.evaluation, k);
        return { label: s.short, value: m?.value ?? NaN, stderr: m?.stderr ?? NaN, color: s.color };
      });
      return h('figure', { class: 'chart-card' }, h('figcaption', {}, title), barChart({ title, bars, format: (v) => formatNumber(v, 3) }));
    }));

    results.replaceChildren(
      h('section', { 'aria-labelledby': 'legend-title' }, h('h2', { id: 'legend-title' }, 'Evaluations'), legend),
      h('section', { 'aria-labelledby': 'table-title' }, h('h2', { id: 'table-title' }, 'Metrics'), table),
      h('section', { 'aria-labelledby': 'charts-title' }, h('h2', { id: 'charts-title' }, 'Charts'), charts));
  }

  loadPicker();
  loadComparison();
  return () => { stopped = true; };
}
