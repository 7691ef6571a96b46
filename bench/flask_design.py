"""The design we replace, rebuilt for the benchmark: Flask + waitress, jobs in an in-memory dict.

    python bench/flask_design.py PORT RECORDS
Serves /poll_job?task_id= and /list_jobs like the old service, with RECORDS jobs on record.
"""

import sys
import uuid

from flask import Flask, jsonify, request
from waitress import serve

app = Flask(__name__)
JOBS = {}


@app.get("/poll_job")
def poll_job():
    job = JOBS.get(request.args.get("task_id", ""))
    if job is None:
        return jsonify({"status": "not found"}), 404
    return jsonify({"status": job["status"]})


@app.get("/list_jobs")
def list_jobs():
    return jsonify([{"task_id": k, "status": v["status"]} for k, v in JOBS.items()])


def main():
    port, records = int(sys.argv[1]), int(sys.argv[2])
    for _ in range(records):
        JOBS[str(uuid.uuid4())] = {"status": "running", "model": "dummy", "tasks": "lmeval_aas_mc", "result": None}
    with open(sys.argv[3], "w") as f:
        f.write("\n".join(JOBS))
    serve(app, host="127.0.0.1", port=port, threads=8, _quiet=True)


if __name__ == "__main__":
    main()
