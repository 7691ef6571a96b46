// The submit form. Builds an EvaluationRequest, shows the exact command on "Dry run", and puts
// each API error (RFC 9457 `field`, a dotted path) next to the form control it names.
import { api, ApiError } from '/ui/api.js';
import { h, shellQuote, copyButton, announce } from '/ui/dom.js';

const MODEL_TYPES = ['dummy', 'hf', 'vllm', 'local-completions', 'local-chat-completions', 'openai-completions',
  'openai-chat-completions', 'gguf', 'sglang', 'anthropic-chat-completions'];
const KNOWN_TASKS = ['lmeval_aas_mc', 'lmeval_aas_gen', 'lmeval_aas_demo', 'lmeval_aas_slow'];
const FORM_FIELDS = new Set(['model', 'model_args', 'tasks', 'num_fewshot', 'limit', 'batch_size', 'gen_kwargs', 'inline_tasks', 'labels']);

let counter = 0;
const uid = (prefix) => `${prefix}-${++counter}`;

function newKey() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

/** Key/value rows with add and remove buttons. `name` is the request field they make. */
function keyValueRows(name, legend, { keyPlaceholder, valuePlaceholder, help, initial = [] }) {
  const list = h('div', { class: 'kv-rows' });
  const errorId = `err-${name}`;
  const error = h('p', { class: 'field-error', id: errorId, hidden: true });
  const fieldset = h('fieldset', { class: 'kv', id: `field-${name}`, 'aria-describedby': `${name}-help` },
    h('legend', {}, legend),
    h('p', { class: 'help', id: `${name}-help` }, help),
    list, error);
  const add = h('button', { type: 'button', class: 'button small secondary add-row' }, `Add ${legend.toLowerCase().replace(/s$/, '')}`);
  fieldset.insertBefore(add, error);

  function addRow(key = '', value = '', focus = false) {
    const keyId = uid(`${name}-key`);
    const valueId = uid(`${name}-value`);
    const row = h('div', { class: 'kv-row' });
    const keyInput = h('input', { id: keyId, class: 'kv-key', value: key, placeholder: keyPlaceholder, autocomplete: 'off', spellcheck: 'false' });
    const valueInput = h('input', { id: valueId, class: 'kv-value', value: value, placeholder: valuePlaceholder, autocomplete: 'off', spellcheck: 'false' });
    const remove = h('button', { type: 'button', class: 'button small ghost', 'aria-label': 'Remove this row' }, '✕');
    remove.addEventListener('click', () => {
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      (next?.querySelector('input') || add).focus();
    });
    row.append(
      h('div', { class: 'field' }, h('label', { for: keyId }, 'Key'), keyInput),
      h('div', { class: 'field grow' }, h('label', { for: valueId }, 'Value'), valueInput),
      remove);
    list.append(row);
    if (focus) keyInput.focus();
  }
  add.addEventListener('click', () => addRow('', '', true));
  for (const [k, v] of initial) addRow(k, v);
  if (!initial.length) addRow();

  return {
    element: fieldset,
    error,
    rows: () => [...list.querySelectorAll('.kv-row')].map((row) => ({
      row, key: row.querySelector('.kv-key'), value: row.querySelector('.kv-value'),
    })),
  };
}

function textField(name, labelText, attrs = {}, help = '') {
  const id = `field-${name}`;
  const helpId = help ? `${name}-help` : null;
  const input = h(attrs.multiline ? 'textarea' : 'input', { id, name, autocomplete: 'off', spellcheck: 'false', 'aria-describedby': helpId, ...attrs, multiline: undefined });
  const error = h('p', { class: 'field-error', id: `err-${name}`, hidden: true });
  const element = h('div', { class: 'field' }, h('label', { for: id }, labelText), input, help ? h('p', { class: 'help', id: helpId }, help) : null, error);
  return { element, input, error };
}

/** A JSON scalar or structure when the text parses as JSON, the text itself otherwise. */
function looseValue(text) {
  const trimmed = text.trim();
  if (trimmed === '') return '';
  try { return JSON.parse(trimmed); } catch { return text; }
}

export function submitView(main, { params }) {
  document.title = 'New evaluation · lm-eval-aas';
  const model = textField('model', 'Model type', { list: 'model-types', value: params.get('model') || 'dummy', required: true },
    'An lm-eval model type such as dummy, hf, vllm or local-completions.');
  const modelTypes = h('datalist', { id: 'model-types' }, MODEL_TYPES.map((m) => h('option', { value: m })));
  const modelArgs = keyValueRows('model_args', 'Model arguments', {
    keyPlaceholder: 'pretrained', valuePlaceholder: 'EleutherAI/pythia-70m',
    help: 'Passed to the model constructor as --model_args key=value,…',
  });
  const tasks = textField('tasks', 'Tasks', { list: 'task-names', value: params.get('tasks') || '', required: true, placeholder: 'lmeval_aas_mc, lmeval_aas_gen' },
    'Task or group names, separated by commas or spaces.');
  const taskNames = h('datalist', { id: 'task-names' }, KNOWN_TASKS.map((t) => h('option', { value: t })));
  const fewshot = textField('num_fewshot', 'Few-shot examples', { type: 'number', min: '0', step: '1', inputmode: 'numeric' }, 'Leave empty for the task default.');
  const limit = textField('limit', 'Limit', { inputmode: 'decimal', value: params.get('limit') || '', placeholder: '10 or 0.1' },
    'Documents per task: a count ≥ 1 or a fraction between 0 and 1.');
  const batch = textField('batch_size', 'Batch size', { placeholder: 'auto', list: 'batch-sizes' }, 'A number, auto or auto:N.');
  const batchSizes = h('datalist', { id: 'batch-sizes' }, ['1', '8', 'auto', 'auto:4'].map((b) => h('option', { value: b })));
  const genKwargs = keyValueRows('gen_kwargs', 'Generation arguments', {
    keyPlaceholder: 'temperature', valuePlaceholder: '0',
    help: 'Values are read as JSON when they parse (0, true, ["\\n"]), as text otherwise.',
  });
  const labels = keyValueRows('labels', 'Labels', {
    keyPlaceholder: 'team', valuePlaceholder: 'nlp',
    help: 'Free-form tags to find this evaluation again (filter the list by key=value).',
  });

  // Inline task YAML: file name + text, repeatable.
  const inlineList = h('div', { class: 'inline-tasks' });
  const inlineError = h('p', { class: 'field-error', id: 'err-inline_tasks', hidden: true });
  const addInline = h('button', { type: 'button', class: 'button small secondary' }, 'Add inline task');
  const inlineFieldset = h('fieldset', { id: 'field-inline_tasks', 'aria-describedby': 'inline_tasks-help' },
    h('legend', {}, 'Inline task YAML'),
    h('p', { class: 'help', id: 'inline_tasks-help' }, 'Optional custom tasks: a file name ending in .yaml and its YAML text. Name the task under Tasks to run it.'),
    inlineList, addInline, inlineError);
  function addInlineTask(focus = false) {
    const nameId = uid('inline-name');
    const textId = uid('inline-yaml');
    const name = h('input', { id: nameId, class: 'inline-name', placeholder: 'my_task.yaml', autocomplete: 'off', spellcheck: 'false' });
    const text = h('textarea', { id: textId, class: 'inline-yaml mono', rows: '6', placeholder: 'task: my_task\ndataset_path: …', spellcheck: 'false' });
    const remove = h('button', { type: 'button', class: 'button small ghost' }, 'Remove');
    const block = h('div', { class: 'inline-task' },
      h('div', { class: 'field' }, h('label', { for: nameId }, 'File name'), name),
      h('div', { class: 'field' }, h('label', { for: textId }, 'YAML'), text), remove);
    remove.addEventListener('click', () => { block.remove(); addInline.focus(); });
    inlineList.append(block);
    if (focus) name.focus();
  }
  addInline.addEventListener('click', () => addInlineTask(true));
  addInlineTask();

  const extra = textField('extra', 'Other request fields (JSON)', { multiline: true, rows: '3', class: 'mono', placeholder: '{"log_samples": true, "timeout_seconds": 3600}' },
    'Any other EvaluationRequest fields as a JSON object, merged into the request.');

  const generalError = h('div', { class: 'alert', role: 'alert', id: 'form-error', hidden: true });
  const dryRunOut = h('section', { class: 'dry-run', id: 'dry-run', hidden: true, 'aria-labelledby': 'dry-run-title' });
  const dryButton = h('button', { type: 'button', class: 'button secondary', id: 'dry-run-button' }, 'Dry run');
  const submitButton = h('button', { type: 'submit', class: 'button', id: 'submit-button' }, 'Submit evaluation');

  const form = h('form', { class: 'submit-form', novalidate: true, 'aria-describedby': 'form-intro' },
    h('p', { id: 'form-intro', class: 'muted' }, 'Fields marked with * are required. "Dry run" shows the exact lm_eval command without starting anything.'),
    generalError,
    h('div', { class: 'grid two' }, model.element, tasks.element),
    modelArgs.element,
    h('div', { class: 'grid three' }, fewshot.element, limit.element, batch.element),
    genKwargs.element, inlineFieldset, labels.element, extra.element,
    h('div', { class: 'form-actions' }, submitButton, dryButton),
    modelTypes, taskNames, batchSizes);
  model.element.querySelector('label').append(h('span', { 'aria-hidden': 'true' }, ' *'));
  tasks.element.querySelector('label').append(h('span', { 'aria-hidden': 'true' }, ' *'));

  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'New evaluation')), form, dryRunOut);

  const simpleFields = { model, tasks, num_fewshot: fewshot, limit, batch_size: batch, extra };
  const groups = { model_args: modelArgs, gen_kwargs: genKwargs, labels };

  function clearErrors() {
    generalError.hidden = true;
    for (const node of form.querySelectorAll('.field-error')) { node.hidden = true; node.textContent = ''; }
    for (const node of form.querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
    for (const node of form.querySelectorAll('.has-error')) node.classList.remove('has-error');
  }

  function markInvalid(control, error, message) {
    error.textContent = message;
    error.hidden = false;
    control.setAttribute('aria-invalid', 'true');
    const described = new Set((control.getAttribute('aria-describedby') || '').split(' ').filter(Boolean));
    described.add(error.id);
    control.setAttribute('aria-describedby', [...described].join(' '));
    control.closest('.field, fieldset')?.classList.add('has-error');
  }

  /** Shows a problem at the control its `field` names; a general message when none does. */
  function showError(field, message) {
    const root = field ? field.split(/[.[]/)[0] : '';
    const rest = field ? field.slice(root.length).replace(/^\./, '') : '';
    let control = null;
    if (simpleFields[root] && root !== 'extra') {
      control = simpleFields[root].input;
      markInvalid(control, simpleFields[root].error, message);
    } else if (groups[root]) {
      const group = groups[root];
      const rows = group.rows();
      const row = rows.find((r) => r.key.value.trim() === rest) || rows[0];
      if (row) {
        control = rest && row.key.value.trim() === rest ? row.value : row.key;
        markInvalid(control, group.error, message);
      } else {
        control = group.element.querySelector('button');
        group.error.textContent = message; group.error.hidden = false;
      }
      group.element.classList.add('has-error');
    } else if (root === 'inline_tasks') {
      const blocks = [...inlineList.querySelectorAll('.inline-task')];
      const block = blocks.find((b) => b.querySelector('.inline-name').value.trim() === rest) || blocks[0];
      control = block ? block.querySelector('.inline-name') : addInline;
      if (block) markInvalid(control, inlineError, message); else { inlineError.textContent = message; inlineError.hidden = false; }
      inlineFieldset.classList.add('has-error');
    } else if (root && !FORM_FIELDS.has(root) && extra.input.value.includes(`"${root}"`)) {
      control = extra.input;
      markInvalid(control, extra.error, `${field}: ${message}`);
    }
    if (!control) {
      generalError.replaceChildren(h('strong', {}, 'The request was not accepted. '), field ? `${field}: ${message}` : message);
      generalError.hidden = false;
      generalError.setAttribute('tabindex', '-1');
      control = generalError;
    }
    control.focus();
    announce(`Error${field ? ` in ${field}` : ''}: ${message}`);
  }

  /** The EvaluationRequest, or throws {field, message} for what the browser can check itself. */
  function buildRequest() {
    const request = { model: model.input.value.trim() };
    const taskList = tasks.input.value.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);
    request.tasks = taskList;
    const rowsObject = (group, parse) => {
      const out = {};
      for (const { key, value } of group.rows()) {
        const k = key.value.trim();
        if (!k && !value.value.trim()) continue;
        if (!k) throw { field: `${group === modelArgs ? 'model_args' : group === genKwargs ? 'gen_kwargs' : 'labels'}`, message: 'every row needs a key', control: key };
        out[k] = parse(value.value);
      }
      return out;
    };
    const args = rowsObject(modelArgs, (v) => v);
    if (Object.keys(args).length) request.model_args = args;
    if (fewshot.input.value.trim() !== '') {
      const n = Number(fewshot.input.value);
      if (!Number.isInteger(n)) throw { field: 'num_fewshot', message: 'must be a whole number' };
      request.num_fewshot = n;
    }
    if (limit.input.value.trim() !== '') {
      const n = Number(limit.input.value);
      if (!Number.isFinite(n)) throw { field: 'limit', message: 'must be a number: a count ≥ 1 or a fraction between 0 and 1' };
      request.limit = n;
    }
    if (batch.input.value.trim() !== '') request.batch_size = batch.input.value.trim();
    const gen = rowsObject(genKwargs, looseValue);
    if (Object.keys(gen).length) request.gen_kwargs = gen;
    const inline = {};
    for (const block of inlineList.querySelectorAll('.inline-task')) {
      const name = block.querySelector('.inline-name').value.trim();
      const text = block.querySelector('.inline-yaml').value;
      if (!name && !text.trim()) continue;
      inline[name || '(no name)'] = text;
    }
    if (Object.keys(inline).length) request.inline_tasks = inline;
    const labelObject = rowsObject(labels, (v) => v.trim());
    if (Object.keys(labelObject).length) request.labels = labelObject;
    if (extra.input.value.trim()) {
      let more;
      try { more = JSON.parse(extra.input.value); } catch (e) { throw { field: 'extra', message: `not valid JSON (${e.message})` }; }
      if (!more || typeof more !== 'object' || Array.isArray(more)) throw { field: 'extra', message: 'must be a JSON object' };
      Object.assign(request, more);
    }
    return request;
  }

  let busy = false;
  let idempotencyKey = newKey();
  form.addEventListener('input', () => { idempotencyKey = newKey(); });

  async function send(dryRun) {
    if (busy) return;
    clearErrors();
    let request;
    try {
      request = buildRequest();
    } catch (problem) {
      if (problem.field === 'extra') { markInvalid(extra.input, extra.error, problem.message); extra.input.focus(); announce(problem.message); }
      else showError(problem.field, problem.message);
      return;
    }
    busy = true;
    submitButton.disabled = dryButton.disabled = true;
    form.setAttribute('aria-busy', 'true');
    try {
      const evaluation = await api.create(request, { dryRun, idempotencyKey: dryRun ? undefined : idempotencyKey });
      if (dryRun) {
        showDryRun(evaluation);
      } else {
        announce('Evaluation submitted');
        location.hash = `#/evaluations/${evaluation.id}`;
      }
    } catch (error) {
      if (error instanceof ApiError) showError(error.field, error.message);
      else showError(null, String(error));
    } finally {
      busy = false;
      submitButton.disabled = dryButton.disabled = false;
      form.removeAttribute('aria-busy');
    }
  }

  function showDryRun(evaluation) {
    const line = shellQuote(evaluation.command);
    dryRunOut.replaceChildren(
      h('div', { class: 'section-head' }, h('h2', { id: 'dry-run-title' }, 'Command that would run'), copyButton(() => line, 'Copy command')),
      h('p', { class: 'muted' }, 'Nothing was started. This is the exact argv the service would run:'),
      h('pre', { class: 'command', id: 'dry-run-command', tabindex: '0' }, h('code', {}, line)));
    dryRunOut.hidden = false;
    dryRunOut.scrollIntoView({ block: 'nearest' });
    announce('Dry run: the command is shown below the form');
  }

  form.addEventListener('submit', (event) => { event.preventDefault(); send(false); });
  dryButton.addEventListener('click', () => send(true));
  return null;
}
