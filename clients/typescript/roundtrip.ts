// Round trip of the TypeScript client generated from openapi/openapi.json (openapi-typescript's
// types, openapi-fetch's client) against a live service:
//
//   node roundtrip.js BASE_URL          (compiled by tsc next to api.d.ts; scripts/test-sdks does it)
//
// Submits with an Idempotency-Key (and again: same evaluation), lists with label and state filters
// over pages, follows an evaluation until it succeeds, reads its log and results, cancels a slow one,
// deletes them all (then 404), and sends an invalid request whose 422 problem reaches this code as the
// typed `error` (the spec's Problem schema). Every step asserts; the first failure exits 1 naming the
// step. LMEVAL_TOKEN, when set, is sent as the bearer token. Type-checked with `strict`: a spec change
// that breaks this use of the API fails the compile, before anything runs.

import createClient from "openapi-fetch";
import type { components, paths } from "./api.js";

type Evaluation = components["schemas"]["Evaluation"];
type EvaluationRequest = components["schemas"]["EvaluationRequest"];
type Problem = components["schemas"]["Problem"];
type State = components["schemas"]["State"];

const DEADLINE_MS = 180_000;

class StepFailed extends Error {}

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new StepFailed(message);
}

let steps = 0;
async function step<T>(name: string, run: () => Promise<T>): Promise<T> {
  steps += 1;
  try {
    const value = await run();
    console.log(`ok ${steps} - ${name}`);
    return value;
  } catch (error) {
    console.log(`not ok ${steps} - ${name}: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  }
}

const baseUrl = process.argv[2]?.replace(/\/+$/, "");
if (!baseUrl) {
  console.error("usage: node roundtrip.js BASE_URL");
  process.exit(2);
}
const token = process.env.LMEVAL_TOKEN;
const client = createClient<paths>({
  baseUrl,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});

const run = Math.random().toString(16).slice(2, 14);
const key = `sdk-typescript-${run}`;

function request(kind: string, tasks: string[], limit?: number): EvaluationRequest {
  // seed and batch_size are unions (an integer, or a list / a string): the generated types take each form.
  const common = { model: "dummy", tasks, labels: { "sdk-run": run, kind } } as const;
  return limit === undefined
    ? { ...common, batch_size: "auto" }
    : { ...common, limit, seed: [0, 1234, null, 1234], batch_size: 1 };
}

/** A response's typed body when it has this status; its problem or status otherwise. */
function expectStatus<T>(result: { data?: T; error?: Problem; response: Response }, status: number): T {
  const { data, error, response } = result;
  check(
    response.status === status,
    `expected HTTP ${status}, got ${response.status}${error ? `: ${error.detail} (field ${error.field})` : ""}`,
  );
  check(data !== undefined, `HTTP ${status} without a body`);
  return data;
}

/** The typed problem of a response that must fail with this status. */
function expectProblem(result: { error?: Problem; response: Response }, status: number): Problem {
  const { error, response } = result;
  check(response.status === status, `expected HTTP ${status}, got ${response.status}`);
  check(error !== undefined, `HTTP ${status} without a problem document`);
  check(error.status === status, `the problem says status ${error.status}`);
  check(typeof error.detail === "string" && error.detail !== "", "the problem has no detail");
  return error;
}

async function waitFor(id: string, want: State): Promise<Evaluation> {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const evaluation = expectStatus(
      await client.GET("/api/v1/evaluations/{id}", { params: { path: { id } } }),
      200,
    );
    if (evaluation.state === want) return evaluation;
    check(
      !["succeeded", "failed", "cancelled"].includes(evaluation.state),
      `evaluation ${id} ended ${evaluation.state} (${evaluation.reason}): ${evaluation.message}`,
    );
    check(Date.now() < deadline, `evaluation ${id} still ${evaluation.state} after ${DEADLINE_MS / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Every evaluation matching the filters, following next_page_token; checks page sizes. */
async function listAll(label: string[], state?: State, pageSize = 50): Promise<Evaluation[]> {
  const items: Evaluation[] = [];
  let pageToken: string | undefined;
  for (let pages = 0; pages < 100; pages++) {
    const page = expectStatus(
      await client.GET("/api/v1/evaluations", {
        params: { query: { label, state, page_size: pageSize, page_token: pageToken } },
      }),
      200,
    );
    check(page.items.length <= pageSize, `a page of ${page.items.length} items for page_size=${pageSize}`);
    items.push(...page.items);
    pageToken = page.next_page_token ?? undefined;
    if (pageToken === undefined) return items;
  }
  throw new StepFailed("more than 100 pages");
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const sameIds = (a: Evaluation[], b: string[]) =>
  a.length === b.length && a.every((evaluation) => b.includes(evaluation.id));

console.log(`# typescript client round trip against ${baseUrl} (labels sdk-run=${run})`);

const first = await step("submit with an Idempotency-Key: 202 and an Evaluation", async () =>
  expectStatus(
    await client.POST("/api/v1/evaluations", {
      body: request("mc", ["lmeval_aas_mc"], 5),
      params: { header: { "Idempotency-Key": key } },
    }),
    202,
  ),
);

await step("the same key and body again: the same evaluation", async () => {
  const result = await client.POST("/api/v1/evaluations", {
    body: request("mc", ["lmeval_aas_mc"], 5),
    params: { header: { "Idempotency-Key": key } },
  });
  const again = expectStatus(result, 202);
  check(again.id === first.id, `the same key gave another evaluation: ${again.id} != ${first.id}`);
  check(result.response.headers.get("Idempotent-Replayed") === "true", "no Idempotent-Replayed: true on the replay");
});

await step("the same key with another body: 409 as a Problem", async () => {
  expectProblem(
    await client.POST("/api/v1/evaluations", {
      body: request("mc", ["lmeval_aas_mc"], 4),
      params: { header: { "Idempotency-Key": key } },
    }),
    409,
  );
});

const more = await step("two more evaluations without a key", async () => {
  const created: Evaluation[] = [];
  for (const limit of [3, 4]) {
    created.push(expectStatus(await client.POST("/api/v1/evaluations", { body: request("mc", ["lmeval_aas_mc"], limit) }), 202));
  }
  return created;
});
const mc = [first, ...more];
const mcIds = mc.map((evaluation) => evaluation.id);
check(new Set(mcIds).size === 3, "three submissions gave fewer than three ids");

const slow = await step("submit a slow evaluation", async () =>
  expectStatus(await client.POST("/api/v1/evaluations", { body: request("slow", ["lmeval_aas_slow"]) }), 202),
);

await step("list by two labels in pages of 2: all three, no others", async () => {
  const seen = await listAll([`sdk-run=${run}`, "kind=mc"], undefined, 2);
  check(sameIds(seen, mcIds), `pages of 2 by label gave ${seen.map((e) => e.id)}, expected ${mcIds}`);
  const page = expectStatus(
    await client.GET("/api/v1/evaluations", { params: { query: { label: [`sdk-run=${run}`, "kind=mc"], page_size: 2 } } }),
    200,
  );
  check(page.items.length === 2, `the first page of 2 had ${page.items.length} items`);
  check(typeof page.next_page_token === "string", "the first of two pages has no next_page_token");
});

await step("cancel the slow one once running: cancelled, reason Cancelled; again is 409", async () => {
  await waitFor(slow.id, "running");
  expectStatus(await client.POST("/api/v1/evaluations/{id}/cancel", { params: { path: { id: slow.id } } }), 202);
  const done = await waitFor(slow.id, "cancelled");
  check(done.reason === "Cancelled", `cancelled with reason ${done.reason}`);
  expectProblem(await client.POST("/api/v1/evaluations/{id}/cancel", { params: { path: { id: slow.id } } }), 409);
  const cancelled = await listAll([`sdk-run=${run}`], "cancelled");
  check(sameIds(cancelled, [slow.id]), `state=cancelled gave ${cancelled.map((e) => e.id)}`);
});

await step("get until succeeded, with metrics", async () => {
  for (const evaluation of mc) {
    const done = await waitFor(evaluation.id, "succeeded");
    check(done.metrics && done.metrics.length > 0, `${done.id} succeeded without metrics`);
    check(done.metrics.some((row) => row.task === "lmeval_aas_mc"), `${done.id}: no lmeval_aas_mc metric`);
  }
});

await step("the namespaced route finds it in its namespace", async () => {
  check(first.namespace, "an evaluation without its namespace");
  const found = expectStatus(
    await client.GET("/api/v1/namespaces/{namespace}/evaluations/{id}", {
      params: { path: { namespace: first.namespace, id: first.id } },
    }),
    200,
  );
  check(found.id === first.id, `the namespaced route gave ${found.id}`);
});

await step("list by label and state", async () => {
  const succeeded = await listAll([`sdk-run=${run}`], "succeeded");
  check(sameIds(succeeded, mcIds), `state=succeeded gave ${succeeded.map((e) => e.id)}`);
  check(succeeded.every((e) => e.state === "succeeded"), "state=succeeded listed another state");
  const failed = await listAll([`sdk-run=${run}`], "failed");
  check(failed.length === 0, `state=failed gave ${failed.map((e) => e.id)}`);
});

await step("logs (whole and tail_lines)", async () => {
  // text/plain: openapi-fetch parses JSON unless told otherwise.
  const whole = expectStatus(
    await client.GET("/api/v1/evaluations/{id}/logs", { params: { path: { id: first.id } }, parseAs: "text" }),
    200,
  );
  check(whole.trim() !== "", "an empty log");
  const tail = expectStatus(
    await client.GET("/api/v1/evaluations/{id}/logs", {
      params: { path: { id: first.id }, query: { tail_lines: 2 } },
      parseAs: "text",
    }),
    200,
  );
  check(tail.split("\n").filter((line) => line !== "").length <= 2, `tail_lines=2 gave ${JSON.stringify(tail)}`);
});

await step("results: lm-eval's results JSON with the task's metrics", async () => {
  const document: unknown = expectStatus(
    await client.GET("/api/v1/evaluations/{id}/results", { params: { path: { id: first.id } } }),
    200,
  );
  check(isRecord(document) && isRecord(document.results), "results JSON without `results`");
  const task = document.results["lmeval_aas_mc"];
  check(isRecord(task) && "acc,none" in task, "results lack lmeval_aas_mc's acc,none");
});

await step("delete all four: 204, then get is 404 as a Problem", async () => {
  for (const evaluation of [...mc, slow]) {
    const { response } = await client.DELETE("/api/v1/evaluations/{id}", { params: { path: { id: evaluation.id } } });
    check(response.status === 204, `delete gave HTTP ${response.status}`);
    expectProblem(await client.GET("/api/v1/evaluations/{id}", { params: { path: { id: evaluation.id } } }), 404);
  }
  const left = await listAll([`sdk-run=${run}`]);
  check(left.length === 0, `deleted evaluations still listed: ${left.map((e) => e.id)}`);
});

await step("limit -3: 422 reaches the caller as a Problem naming field 'limit'", async () => {
  const result = await client.POST("/api/v1/evaluations", {
    body: { model: "dummy", tasks: ["lmeval_aas_mc"], limit: -3 },
  });
  const problem = expectProblem(result, 422);
  check(problem.field === "limit", `the problem names field ${JSON.stringify(problem.field)}, not "limit"`);
  check(
    result.response.headers.get("Content-Type")?.startsWith("application/problem+json"),
    "not application/problem+json",
  );
});

console.log(`# typescript round trip: ${steps} steps passed`);
