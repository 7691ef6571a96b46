#!/usr/bin/env python3
"""Round trip of the Python client generated from openapi/openapi.json against a live service.

    PYTHONPATH=DIR_WITH_lm_eval_aas_client python roundtrip.py BASE_URL

Submits with an Idempotency-Key (and again: same evaluation), lists with label and state filters
over pages, follows an evaluation until it succeeds, reads its log and results, cancels a slow one,
deletes them all (then 404), and sends an invalid request whose 422 problem reaches this code as
the generated `Problem` model. Every step asserts; the first failure exits 1 naming the step.
`LMEVAL_TOKEN`, when set, is sent as the bearer token. Uses only the generated client (and httpx
only through it).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any, Callable

from lm_eval_aas_client import AuthenticatedClient, Client
from lm_eval_aas_client.api.evaluations import (
    cancel_evaluation,
    create_evaluation,
    delete_evaluation,
    get_evaluation,
    get_evaluation_logs,
    get_evaluation_results,
    list_evaluations,
)
from lm_eval_aas_client.api.namespaced import get_namespaced_evaluation
from lm_eval_aas_client.models import (
    Evaluation,
    EvaluationList,
    EvaluationRequest,
    EvaluationRequestLabels,
    ModelType,
    Problem,
    Reason,
    State,
)
from lm_eval_aas_client.types import Response

DEADLINE_SECONDS = 180
steps = 0


class StepFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def step(name: str, run: Callable[[], Any]) -> Any:
    """One named step of the round trip, printed as a TAP line."""
    global steps
    steps += 1
    try:
        value = run()
    except Exception as error:  # a failed assertion, or the client raising
        print(f"not ok {steps} - {name}: {error}")
        raise SystemExit(1)
    print(f"ok {steps} - {name}")
    return value


def describe(response: Response[Any]) -> str:
    return f"HTTP {int(response.status_code)}: {response.content[:300]!r}"


def expect(response: Response[Any], status: int, model: type) -> Any:
    """The parsed body of a response that must have this status and model."""
    check(int(response.status_code) == status, f"expected HTTP {status}, got {describe(response)}")
    check(isinstance(response.parsed, model), f"expected a {model.__name__}, got {type(response.parsed).__name__}")
    return response.parsed


def request(run: str, kind: str, tasks: list[str], limit: float | None) -> EvaluationRequest:
    # `labels` is a string map; the generator names its class after the property (see clients/README.md).
    labels = EvaluationRequestLabels.from_dict({"sdk-run": run, "kind": kind})
    # seed and batch_size are unions (an integer, or a list / a string): the generated types take each form.
    if limit is None:
        return EvaluationRequest(model=ModelType.DUMMY, tasks=tasks, labels=labels, batch_size="auto")
    return EvaluationRequest(
        model=ModelType.DUMMY, tasks=tasks, limit=limit, labels=labels, seed=[0, 1234, None, 1234], batch_size=1
    )


def wait_for(client: AuthenticatedClient | Client, id: uuid.UUID, states: set[State]) -> Evaluation:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        evaluation = expect(get_evaluation.sync_detailed(id, client=client), 200, Evaluation)
        if evaluation.state in states:
            return evaluation
        check(
            evaluation.state not in {State.SUCCEEDED, State.FAILED, State.CANCELLED},
            f"evaluation {id} ended {evaluation.state.value} ({evaluation.reason}): {evaluation.message}",
        )
        check(time.monotonic() < deadline, f"evaluation {id} still {evaluation.state.value} after {DEADLINE_SECONDS} s")
        time.sleep(0.5)


def list_all(
    client: AuthenticatedClient | Client, labels: list[str], state: State | None = None, page_size: int = 50
) -> list[Evaluation]:
    """Every evaluation matching the filters, following next_page_token; checks page sizes."""
    items: list[Evaluation] = []
    token: str | None = None
    for _ in range(100):
        kwargs: dict[str, Any] = {"client": client, "label": labels, "page_size": page_size}
        if state is not None:
            kwargs["state"] = state
        if token is not None:
            kwargs["page_token"] = token
        page = expect(list_evaluations.sync_detailed(**kwargs), 200, EvaluationList)
        check(len(page.items) <= page_size, f"a page of {len(page.items)} items for page_size={page_size}")
        items.extend(page.items)
        token = page.next_page_token if isinstance(page.next_page_token, str) else None
        if token is None:
            return items
    raise StepFailed("more than 100 pages")


def main() -> None:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    base_url = sys.argv[1].rstrip("/")
    token = os.environ.get("LMEVAL_TOKEN")
    # The generated functions are annotated with AuthenticatedClient (every operation declares the
    # bearer scheme); a plain Client serves a service started with `--auth none`.
    client: AuthenticatedClient | Client = (
        AuthenticatedClient(base_url=base_url, token=token, timeout=30.0)
        if token
        else Client(base_url=base_url, timeout=30.0)
    )
    run = uuid.uuid4().hex[:12]
    key = f"sdk-python-{run}"
    print(f"# python client round trip against {base_url} (labels sdk-run={run})")

    def submit_with_key() -> Evaluation:
        response = create_evaluation.sync_detailed(
            client=client, body=request(run, "mc", ["lmeval_aas_mc"], 5), idempotency_key=key
        )
        return expect(response, 202, Evaluation)

    first = step("submit with an Idempotency-Key: 202 and an Evaluation", submit_with_key)

    def submit_again() -> None:
        response = create_evaluation.sync_detailed(
            client=client, body=request(run, "mc", ["lmeval_aas_mc"], 5), idempotency_key=key
        )
        again = expect(response, 202, Evaluation)
        check(again.id == first.id, f"the same key gave another evaluation: {again.id} != {first.id}")
        check(response.headers.get("idempotent-replayed") == "true", "no Idempotent-Replayed: true on the replay")

    step("the same key and body again: the same evaluation", submit_again)

    def same_key_other_body() -> None:
        response = create_evaluation.sync_detailed(
            client=client, body=request(run, "mc", ["lmeval_aas_mc"], 4), idempotency_key=key
        )
        problem = expect(response, 409, Problem)
        check(problem.status == 409 and bool(problem.detail), f"409 problem without status or detail: {problem}")

    step("the same key with another body: 409 as a Problem", same_key_other_body)

    def submit_two_more() -> list[Evaluation]:
        return [
            expect(
                create_evaluation.sync_detailed(client=client, body=request(run, "mc", ["lmeval_aas_mc"], limit)),
                202,
                Evaluation,
            )
            for limit in (3, 4)
        ]

    mc = [first] + step("two more evaluations without a key", submit_two_more)
    mc_ids = {evaluation.id for evaluation in mc}
    check(len(mc_ids) == 3, "three submissions gave fewer than three ids")

    def slow_submit() -> Evaluation:
        response = create_evaluation.sync_detailed(client=client, body=request(run, "slow", ["lmeval_aas_slow"], None))
        return expect(response, 202, Evaluation)

    slow = step("submit a slow evaluation", slow_submit)

    def paging() -> None:
        seen = list_all(client, [f"sdk-run={run}", "kind=mc"], page_size=2)
        ids = [evaluation.id for evaluation in seen]
        check(len(ids) == 3 and set(ids) == mc_ids, f"pages of 2 by label gave {ids}, expected {sorted(mc_ids)}")
        first_page = expect(
            list_evaluations.sync_detailed(client=client, label=[f"sdk-run={run}", "kind=mc"], page_size=2),
            200,
            EvaluationList,
        )
        check(len(first_page.items) == 2, f"the first page of 2 had {len(first_page.items)} items")
        check(isinstance(first_page.next_page_token, str), "the first of two pages has no next_page_token")

    step("list by two labels in pages of 2: all three, no others", paging)

    def cancel() -> None:
        wait_for(client, slow.id, {State.RUNNING})
        response = cancel_evaluation.sync_detailed(slow.id, client=client)
        expect(response, 202, Evaluation)
        done = wait_for(client, slow.id, {State.CANCELLED})
        check(done.reason == Reason.CANCELLED, f"cancelled with reason {done.reason}")
        again = cancel_evaluation.sync_detailed(slow.id, client=client)
        problem = expect(again, 409, Problem)
        check(bool(problem.detail), "409 without detail")
        cancelled = list_all(client, [f"sdk-run={run}"], state=State.CANCELLED)
        check([e.id for e in cancelled] == [slow.id], f"state=cancelled gave {[str(e.id) for e in cancelled]}")

    step("cancel the slow one once running: cancelled, reason Cancelled; again is 409", cancel)

    def until_succeeded() -> None:
        for evaluation in mc:
            done = wait_for(client, evaluation.id, {State.SUCCEEDED})
            check(isinstance(done.metrics, list) and len(done.metrics) > 0, f"{done.id} succeeded without metrics")
            check(any(row.task == "lmeval_aas_mc" for row in done.metrics), f"{done.id}: no lmeval_aas_mc metric")

    step("get until succeeded, with metrics", until_succeeded)

    def namespaced() -> None:
        check(isinstance(first.namespace, str) and first.namespace != "", "an evaluation without its namespace")
        response = get_namespaced_evaluation.sync_detailed(first.namespace, first.id, client=client)
        found = expect(response, 200, Evaluation)
        check(found.id == first.id, f"the namespaced route gave {found.id}")

    step("the namespaced route finds it in its namespace", namespaced)

    def by_state() -> None:
        succeeded = list_all(client, [f"sdk-run={run}"], state=State.SUCCEEDED)
        check({e.id for e in succeeded} == mc_ids, f"state=succeeded gave {[str(e.id) for e in succeeded]}")
        check(all(e.state == State.SUCCEEDED for e in succeeded), "state=succeeded listed another state")
        failed = list_all(client, [f"sdk-run={run}"], state=State.FAILED)
        check(failed == [], f"state=failed gave {[str(e.id) for e in failed]}")

    step("list by label and state", by_state)

    def logs() -> None:
        response = get_evaluation_logs.sync_detailed(first.id, client=client)
        check(int(response.status_code) == 200, describe(response))
        check(isinstance(response.parsed, str) and response.parsed.strip() != "", "an empty log")
        tail = get_evaluation_logs.sync_detailed(first.id, client=client, tail_lines=2)
        check(isinstance(tail.parsed, str) and len(tail.parsed.splitlines()) <= 2, f"tail_lines=2 gave {tail.parsed!r}")

    step("logs (whole and tail_lines)", logs)

    def results() -> None:
        parsed = get_evaluation_results.sync_detailed(first.id, client=client).parsed
        check(not isinstance(parsed, Problem) and parsed is not None, f"no results: {parsed}")
        document = parsed.to_dict()
        check("lmeval_aas_mc" in document.get("results", {}), f"results lack lmeval_aas_mc: {list(document)}")
        check("acc,none" in document["results"]["lmeval_aas_mc"], "results lack acc,none")

    step("results: lm-eval's results JSON with the task's metrics", results)

    def delete() -> None:
        for evaluation in mc + [slow]:
            response = delete_evaluation.sync_detailed(evaluation.id, client=client)
            check(int(response.status_code) == 204, describe(response))
            gone = get_evaluation.sync_detailed(evaluation.id, client=client)
            problem = expect(gone, 404, Problem)
            check(problem.status == 404, f"404 problem says status {problem.status}")
        left = list_all(client, [f"sdk-run={run}"])
        check(left == [], f"deleted evaluations still listed: {[str(e.id) for e in left]}")

    step("delete all four: 204, then get is 404 as a Problem", delete)

    def invalid() -> None:
        body = EvaluationRequest(model=ModelType.DUMMY, tasks=["lmeval_aas_mc"], limit=-3)
        response = create_evaluation.sync_detailed(client=client, body=body)
        problem = expect(response, 422, Problem)
        check(problem.field == "limit", f"the problem names field {problem.field!r}, not 'limit'")
        check(isinstance(problem.detail, str) and problem.detail != "", "the problem has no detail")
        check(problem.status == 422, f"the problem says status {problem.status}")
        check(response.headers.get("content-type", "").startswith("application/problem+json"), "not problem+json")

    step("limit -3: 422 reaches the caller as a Problem naming field 'limit'", invalid)

    print(f"# python round trip: {steps} steps passed")


if __name__ == "__main__":
    main()
