// The list: newest first, filtered by state and labels, refreshed in place every few seconds.
import { api } from '/ui/api.js';
import { h, STATES, stateBadge, progressBar, shortId, age, announce } from '/ui/dom.js';

const REFRESH_MS = 2000;

export function listView(main, { params }) {
  document.title = 'Evaluations · lm-eval-aas';
  let state = params.get('state') || '';
  let labelText = params.getAll('label').join(' ');
  let pageSize = 50;
  let timer = null;
  let stopped = false;
  const selected = new Set();
  const rows = new Map();

  const stateSelect = h('select', { id: 'filter-state', name: 'state' },
    h('option', { value: '' }, 'Any state'),
    STATES.map((s) => h('option', { value: s, selected: s === state }, s)));
  const labelInput = h('input', {
    id: 'filter-label', name: 'label', type: 'search', value: labelText, placeholder: 'team=nlp',
    'aria-describedby': 'filter-label-help', autocomplete: 'off', spellcheck: 'false',
  });
  const filterError = h('p', { class: 'field-error', id: 'filter-error', hidden: true });
  const filters = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter evaluations' },
    h('div', { class: 'field' }, h('label', { for: 'filter-state' }, 'State'), stateSelect),
    h('div', { class: 'field grow' }, h('label', { for: 'filter-label' }, 'Labels'), labelInput,
      h('p', { class: 'help', id: 'filter-label-help' }, 'key=value, several separated by spaces (all must match)')),
    h('div', { class: 'field actions' }, h('button', { type: 'submit', class: 'button secondary' }, 'Apply')),
    filterError);

  const compareButton = h('button', { type: 'button', class: 'button', disabled: true, id: 'compare-selected' }, 'Compare selected');
  const selectionNote = h('span', { class: 'muted', id: 'selection-note' }, 'Tick two or more succeeded evaluations to compare them.');
  const tbody = h('tbody');
  const table = h('table', { class: 'evaluations responsive', id: 'evaluations' },
    h('caption', { class: 'visually-hidden' }, 'Evaluations, newest first'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Select for comparison')),
      h('th', { scope: 'col' }, 'Evaluation'), h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col' }, 'Model'),
      h('th', { scope: 'col' }, 'Tasks'), h('th', { scope: 'col' }, 'Progress'), h('th', { scope: 'col' }, 'Age'))),
    tbody);
  const empty = h('p', { class: 'empty', hidden: true }, 'No evaluations yet. ', h('a', { href: '#/new' }, 'Start one'), '.');
  const status = h('p', { class: 'refresh-status muted', 'aria-live': 'off' });
  const moreButton = h('button', { type: 'button', class: 'button secondary', hidden: true }, 'Show more');
  const errorBox = h('div', { class: 'alert', role: 'alert', hidden: true });

  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Evaluations'), h('a', { class: 'button', href: '#/new' }, 'New evaluation')),
    filters, errorBox,
    h('div', { class: 'toolbar' }, compareButton, selectionNote),
    h('div', { class: 'table-wrap' }, table), empty, moreButton, status);

  function labelsFromText(text) {
    return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
  }

  function syncHash() {
    const query = new URLSearchParams();
    if (state) query.set('state', state);
    for (const label of labelsFromText(labelText)) query.append('label', label);
    const target = `#/${query.toString() ? `?${query}` : ''}`;
    if (location.hash !== target) history.replaceState(null, '', target);
  }

  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    labelText = labelInput.value;
    const bad = labelsFromText(labelText).find((l) => !/^[^=]+=.*$/.test(l));
    if (bad) {
      filterError.textContent = `"${bad}" is not key=value.`;
      filterError.hidden = false;
      labelInput.setAttribute('aria-invalid', 'true');
      labelInput.setAttribute('aria-describedby', 'filter-label-help filter-error');
      labelInput.focus();
      return;
    }
    filterError.hidden = true;
    labelInput.removeAttribute('aria-invalid');
    syncHash();
    refresh(true);
  });
  stateSelect.addEventListener('change', () => { state = stateSelect.value; syncHash(); refresh(true); });
  moreButton.addEventListener('click', () => { pageSize = Math.min(500, pageSize + 50); refresh(true); });
  compareButton.addEventListener('click', () => { location.hash = `#/compare?ids=${[...selected].join(',')}`; });

  function updateSelection() {
    compareButton.disabled = selected.size < 2;
    selectionNote.textContent = selected.size
      ? `${selected.size} selected${selected.size < 2 ? ' — tick one more to compare' : ''}`
      : 'Tick two or more succeeded evaluations to compare them.';
  }

  function makeRow(evaluation) {
    const id = evaluation.id;
    const checkbox = h('input', { type: 'checkbox', class: 'select', 'aria-label': `Select ${shortId(id)} for comparison` });
    checkbox.addEventListener('change', () => {
      if (checkbox.checked) selected.add(id); else selected.delete(id);
      updateSelection();
    });
    const cells = {
      select: h('td', { class: 'select-cell' }, checkbox),
      id: h('td', { 'data-label': 'Evaluation' }, h('a', { href: `#/evaluations/${id}`, class: 'mono' }, shortId(id))),
      state: h('td', { 'data-label': 'State' }),
      model: h('td', { 'data-label': 'Model' }),
      tasks: h('td', { 'data-label': 'Tasks' }),
      progress: h('td', { 'data-label': 'Progress', class: 'progress-cell' }),
      age: h('td', { 'data-label': 'Age' }),
    };
    const row = h('tr', { dataset: { id } }, Object.values(cells));
    return { row, cells, checkbox, key: '' };
  }

  function updateRow(entry, evaluation) {
    const { cells, checkbox } = entry;
    const canCompare = evaluation.state === 'succeeded';
    checkbox.disabled = !canCompare;
    if (!canCompare && selected.has(evaluation.id)) { selected.delete(evaluation.id); checkbox.checked = false; }
    checkbox.title = canCompare ? '' : 'Only succeeded evaluations can be compared';
    entry.row.dataset.state = evaluation.state;
    const key = JSON.stringify([evaluation.state, evaluation.progress, evaluation.labels]);
    if (key !== entry.key) {
      entry.key = key;
      cells.state.replaceChildren(stateBadge(evaluation.state));
      const labels = Object.entries(evaluation.labels || {}).filter(([k]) => !k.startsWith('lm-eval-aas'));
      cells.model.replaceChildren(h('div', { class: 'model-cell' }, h('span', {}, evaluation.request.model),
        labels.length ? h('span', { class: 'labels' }, labels.map(([k, v]) => h('span', { class: 'label-chip' }, `${k}=${v}`))) : null));
      cells.tasks.replaceChildren(evaluation.request.tasks.join(', '));
      cells.progress.replaceChildren(progressBar(evaluation));
    }
    const ageText = age(evaluation.created_at);
    if (cells.age.textContent !== ageText) cells.age.replaceChildren(h('time', { datetime: evaluation.created_at, title: evaluation.created_at }, ageText));
  }

  async function refresh(userAsked = false) {
    clearTimeout(timer);
    try {
      const page = await api.list({ pageSize, state, labels: labelsFromText(labelText) });
      if (stopped) return;
      errorBox.hidden = true;
      const seen = new Set();
      let previous = null;
      for (const evaluation of page.items) {
        seen.add(evaluation.id);
        let entry = rows.get(evaluation.id);
        if (!entry) { entry = makeRow(evaluation); rows.set(evaluation.id, entry); }
        updateRow(entry, evaluation);
        // Move rows only when out of place, so a focused checkbox keeps its focus.
        const expected = previous ? previous.nextSibling : tbody.firstChild;
        if (expected !== entry.row) tbody.insertBefore(entry.row, expected);
        previous = entry.row;
      }
      for (const [id, entry] of rows) {
        if (!seen.has(id)) { entry.row.remove(); rows.delete(id); selected.delete(id); }
      }
      updateSelection();
      empty.hidden = page.items.length > 0;
      if (!empty.hidden && (state || labelText.trim())) empty.replaceChildren('No evaluations match these filters.');
      moreButton.hidden = !page.next_page_token || pageSize >= 500;
      status.textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
      if (userAsked) announce(`${page.items.length} evaluation${page.items.length === 1 ? '' : 's'} shown`);
    } catch (error) {
      if (stopped) return;
      errorBox.hidden = false;
      errorBox.textContent = `Could not load the evaluations: ${error.message}`;
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
