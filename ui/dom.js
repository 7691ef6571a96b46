// Small DOM and formatting helpers shared by the views. No dependencies.

/** h('div', {class: 'x', onclick: fn}, child, 'text', [more]) → Element. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key in node && typeof value !== 'string') node[key] = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

export const STATES = ['pending', 'running', 'succeeded', 'failed', 'cancelled'];
export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

export function stateBadge(state) {
  return h('span', { class: `badge state-${state}` }, state);
}

/** A progress bar with its percentage as text (not colour alone). */
export function progressBar(evaluation) {
  const p = evaluation.progress;
  let percent = p ? Math.max(0, Math.min(100, p.percent)) : null;
  if (evaluation.state === 'succeeded') percent = 100;
  const text = percent === null ? (evaluation.state === 'pending' ? 'waiting' : '—') : `${Math.round(percent)}%`;
  const detail = p && p.total ? ` (${p.completed}/${p.total})` : '';
  return h('div', { class: 'progress' },
    h('div', {
      class: `progress-track state-${evaluation.state}`, role: 'progressbar',
      'aria-valuemin': '0', 'aria-valuemax': '100',
      'aria-valuenow': percent === null ? undefined : String(Math.round(percent)),
      'aria-valuetext': `${text}${detail}`, 'aria-label': 'Progress',
    }, h('div', { class: 'progress-fill', style: `width: ${percent ?? 0}%` })),
    h('span', { class: 'progress-text' }, text));
}

export function shortId(id) {
  return id.slice(0, 8);
}

/** "12 s ago", "3 min ago", "2 h ago", "5 d ago". */
export function age(iso, now = Date.now()) {
  if (!iso) return '—';
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function duration(fromIso, toIso) {
  if (!fromIso) return '';
  const end = toIso ? Date.parse(toIso) : Date.now();
  const seconds = Math.max(0, Math.round((end - Date.parse(fromIso)) / 1000));
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

export function timestamp(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const date = new Date(iso);
  return h('time', { datetime: iso, title: iso }, date.toLocaleString());
}

/** The argv as one line a shell would run unchanged. */
export function shellQuote(argv) {
  return argv.map((arg) => (/^[A-Za-z0-9_\-./=:,@%+]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`)).join(' ');
}

export function formatNumber(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return '—';
  if (Number.isInteger(value)) return String(value);
  return Number(value).toFixed(digits).replace(/0+$/, '').replace(/\.$/, '');
}

/** 512 B, 3.4 KiB, 12 MiB. */
export function humanSize(bytes) {
  if (!Number.isFinite(bytes)) return '—';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** "model · pretrained" or just the model, for legends and headings. */
export function modelName(evaluation) {
  const args = evaluation.request?.model_args || {};
  const name = args.pretrained ?? args.model ?? args.model_name ?? args.base_url;
  return name ? `${evaluation.request.model} · ${name}` : evaluation.request?.model ?? '?';
}

export function announce(message) {
  const region = document.getElementById('announcer');
  if (!region) return;
  region.textContent = '';
  // A fresh text node so screen readers re-read a repeated message.
  setTimeout(() => { region.textContent = message; }, 50);
}

export function copyButton(getText, label = 'Copy') {
  const button = h('button', { type: 'button', class: 'button small secondary' }, label);
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(getText());
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Select and copy';
    }
    setTimeout(() => { button.textContent = label; }, 1500);
  });
  return button;
}
