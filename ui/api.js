// The service's JSON API. Failures throw ApiError carrying the RFC 9457 problem document.

export class ApiError extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.problem = problem;
    this.status = status;
    this.field = problem.field || null;
  }
}

// The bearer token the service asked for, kept only for this browser session (never in localStorage).
const TOKEN_KEY = 'lm-eval-aas-token';
export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY) || '',
  setToken: (token) => (token ? sessionStorage.setItem(TOKEN_KEY, token) : sessionStorage.removeItem(TOKEN_KEY)),
  authorization: () => (session.token() ? { Authorization: `Bearer ${session.token()}` } : {}),
};

// A 401 tells the page to ask for a token (app.js listens).
function unauthenticated(status) {
  if (status === 401) window.dispatchEvent(new CustomEvent('lm-eval-aas:unauthenticated'));
}

// The ApiError of a failed response, with its problem document when it sent one.
async function failure(response) {
  unauthenticated(response.status);
  const text = await response.text().catch(() => '');
  let problem = null;
  try { problem = JSON.parse(text); } catch { problem = null; }
  if (!problem || typeof problem !== 'object') problem = { title: response.statusText, detail: text.slice(0, 500) || undefined };
  return new ApiError(problem, response.status);
}

async function call(method, path, { body, headers = {} } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { Accept: 'application/json', ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...session.authorization(), ...headers },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (error) {
    throw new ApiError({ title: 'Network error', detail: `The service could not be reached (${error.message}).` }, 0);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    unauthenticated(response.status);
    const problem = data && typeof data === 'object' ? data : { title: response.statusText, detail: text.slice(0, 500) };
    throw new ApiError(problem, response.status);
  }
  return data;
}

export const api = {
  list({ pageSize = 50, state = '', labels = [], pageToken = '' } = {}) {
    const query = new URLSearchParams({ page_size: String(pageSize) });
    if (state) query.set('state', state);
    for (const label of labels) query.append('label', label);
    if (pageToken) query.set('page_token', pageToken);
    return call('GET', `/api/v1/evaluations?${query}`);
  },
  get: (id) => call('GET', `/api/v1/evaluations/${encodeURIComponent(id)}`),
  create: (request, { dryRun = false, idempotencyKey } = {}) => call('POST', `/api/v1/evaluations${dryRun ? '?dry_run=true' : ''}`, {
    body: request,
    headers: idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : {},
  }),
  cancel: (id) => call('POST', `/api/v1/evaluations/${encodeURIComponent(id)}/cancel`),
  remove: (id) => call('DELETE', `/api/v1/evaluations/${encodeURIComponent(id)}`),
  resultsUrl: (id) => `/api/v1/evaluations/${encodeURIComponent(id)}/results`,
  // A file of the service (results, an artifact, the archive) as a Blob: a plain link cannot carry the token.
  async blob(url) {
    const response = await fetch(url, { headers: session.authorization() });
    if (!response.ok) throw await failure(response);
    return response.blob();
  },
  artifacts: (id) => call('GET', `/api/v1/evaluations/${encodeURIComponent(id)}/artifacts`),
  // Each segment encoded, the slashes kept: the route takes the path as listed.
  artifactUrl: (id, path) => `/api/v1/evaluations/${encodeURIComponent(id)}/artifacts/${path.split('/').map(encodeURIComponent).join('/')}`,
  archiveUrl: (id) => `/api/v1/evaluations/${encodeURIComponent(id)}/artifacts.tar.gz`,
  manifestUrl: (id) => `/api/v1/evaluations/${encodeURIComponent(id)}/manifest`,
  samplesUrl(id, { task, pageSize, outcome = '' }) {
    const query = new URLSearchParams({ task, page_size: String(pageSize) });
    if (outcome) query.set('outcome', outcome);
    return `/api/v1/evaluations/${encodeURIComponent(id)}/samples?${query}`;
  },
  // One page of per-sample records (JSON lines) and the next page's URL from `Link: <…>; rel="next"`, if any.
  async samplesPage(url) {
    let response;
    try {
      response = await fetch(url, { headers: { Accept: 'application/x-ndjson', ...session.authorization() } });
    } catch (error) {
      throw new ApiError({ title: 'Network error', detail: `The service could not be reached (${error.message}).` }, 0);
    }
    if (!response.ok) throw await failure(response);
    const text = await response.text();
    const records = text.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line));
    const next = /<([^>]*)>\s*;\s*rel="?next"?/.exec(response.headers.get('Link') || '')?.[1] ?? null;
    return { records, next };
  },
  // Follows the log with fetch (EventSource cannot send a token): calls onLine per line; resolves at its end.
  async followLog(id, onLine, signal) {
    const response = await fetch(api.logsUrl(id, { follow: true }), { headers: session.authorization(), signal });
    if (!response.ok) { unauthenticated(response.status); throw new ApiError({ title: response.statusText }, response.status); }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let rest = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const lines = (rest + value).split('\n');
      rest = lines.pop();
      for (const line of lines) onLine(line);
    }
    if (rest) onLine(rest);
  },
  logsUrl: (id, { follow = true, tailLines } = {}) => {
    const query = new URLSearchParams({ follow: String(follow) });
    if (tailLines) query.set('tail_lines', String(tailLines));
    return `/api/v1/evaluations/${encodeURIComponent(id)}/logs?${query}`;
  },
};
