"""Prints an evaluation (JSON on stdin) as a metrics table; exits 1 unless it succeeded."""

import json
import sys

evaluation = json.load(sys.stdin)
line = f"evaluation {evaluation['id']}: {evaluation['state']}"
if evaluation["reason"]:
    line += f" ({evaluation['reason']}: {evaluation['message']})"
print(line)
print(f"{'task':<18} {'metric':<12} {'filter':<8} {'value':>8} {'stderr':>8}")
for row in evaluation.get("metrics") or []:
    stderr = "" if row["stderr"] is None else f"{row['stderr']:.4f}"
    value = row["value"] if row["value"] is None else f"{row['value']:.4f}"
    print(f"{row['task']:<18} {row['metric']:<12} {row['filter']:<8} {value:>8} {stderr:>8}")
sys.exit(0 if evaluation["state"] == "succeeded" else 1)
