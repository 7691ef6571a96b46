// The service's JSON API. Failures throw ApiError carrying the RFC 9457 problem document.

export class ApiError extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.problem = problem;
    this.status = status;
    this.field = problem.field || null;
  }
}

async function call(method, path, { body, headers = {} } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { Accept: 'application/json', ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
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
  logsUrl: (id, { follow = true, tailLines } = {}) => {
    const query = new URLSearchParams({ follow: String(follow) });
    if (tailLines) query.set('tail_lines', String(tailLines));
    return `/api/v1/evaluations/${encodeURIComponent(id)}/logs?${query}`;
  },
};
