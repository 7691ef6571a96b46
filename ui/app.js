// The web UI's entry point: a hash router over four views. Each view renders into <main>
// and returns a cleanup function (timers, EventSource) that runs when the route changes.
import { listView } from '/ui/list.js';
import { submitView } from '/ui/submit.js';
import { detailView } from '/ui/detail.js';
import { compareView } from '/ui/compare.js';
import { h } from '/ui/dom.js';
import { session } from '/ui/api.js';

const routes = [
  [/^\/?$/, 'list', listView],
  [/^\/new$/, 'new', submitView],
  [/^\/evaluations\/([0-9a-fA-F-]{36})$/, 'list', detailView],
  [/^\/compare$/, 'compare', compareView],
];

let cleanup = null;
let firstRender = true;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  return { path, params: new URLSearchParams(query) };
}

async function render() {
  if (cleanup) { try { cleanup(); } catch { /* a view's cleanup must not stop navigation */ } }
  cleanup = null;
  const { path, params } = parseHash();
  const main = document.getElementById('main');
  main.replaceChildren();
  let matched = null;
  for (const [pattern, nav, view] of routes) {
    const match = path.match(pattern);
    if (match) { matched = { nav, view, args: match.slice(1) }; break; }
  }
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (matched && link.dataset.nav === matched.nav && (path === '/' || path === '/new' || path === '/compare')) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!matched) {
    document.title = 'Not found · lm-eval-aas';
    main.append(h('h1', { tabindex: '-1' }, 'Page not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the evaluations')));
  } else {
    cleanup = matched.view(main, { params, args: matched.args }) || null;
  }
  // Move focus to the new page's heading so keyboard and screen-reader users land on it.
  if (!firstRender) {
    const heading = main.querySelector('h1');
    if (heading) { heading.setAttribute('tabindex', '-1'); heading.focus({ preventScroll: false }); }
    window.scrollTo(0, 0);
  }
  firstRender = false;
}

// The service asked for a bearer token (401): ask the user for one, keep it for this browser session only.
function renderTokenSlot(asked) {
  const slot = document.getElementById('token-slot');
  if (!slot) return;
  if (session.token() && !asked) {
    slot.replaceChildren(h('button', { type: 'button', class: 'button secondary', id: 'forget-token', onclick: () => { session.setToken(''); renderTokenSlot(false); render(); } }, 'Forget token'));
    return;
  }
  if (!asked) { slot.replaceChildren(); return; }
  const input = h('input', { type: 'password', id: 'token-input', autocomplete: 'off', required: true, 'aria-describedby': 'token-help' });
  const form = h('form', { class: 'token-form', id: 'token-form' },
    h('label', { for: 'token-input' }, 'Bearer token'),
    input,
    h('button', { type: 'submit', class: 'button' }, 'Use token'),
    h('p', { id: 'token-help', class: 'hint' }, 'This service needs a token (for example `kubectl create token NAME`); it is kept only for this browser session.'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    session.setToken(input.value.trim());
    renderTokenSlot(false);
    render();
  });
  slot.replaceChildren(form);
  input.focus();
}

window.addEventListener('lm-eval-aas:unauthenticated', () => renderTokenSlot(true));
window.addEventListener('hashchange', render);
renderTokenSlot(false);
render();
