"""Reads argv lists (JSON on stdin) and prints what lm-eval's own CLI makes of each.

Runs lm-eval 0.4.13's real parser (HarnessCLI) and its real config builder
(EvaluatorConfig.from_cli), stopping short of evaluating anything. Output: one
JSON object per case, either the effective configuration or {"error": ...}.
"""

import contextlib
import io
import json
import sys

from lm_eval._cli.harness import HarnessCLI
from lm_eval.config.evaluate_config import EvaluatorConfig

FIELDS = [
    "model", "model_args", "tasks", "num_fewshot", "limit", "batch_size", "max_batch_size",
    "gen_kwargs", "log_samples", "apply_chat_template", "fewshot_as_multiturn",
    "system_instruction", "seed", "predict_only", "metadata", "include_path", "output_path",
    "confirm_run_unsafe_code", "trust_remote_code",
]


def effective_config(argv):
    cli = HarnessCLI()
    noise = io.StringIO()
    try:
        with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            namespace = cli._parser.parse_args(argv[1:])
            config = EvaluatorConfig.from_cli(namespace)
    except SystemExit:
        return {"error": noise.getvalue().strip()}
    except Exception as e:  # noqa: BLE001 - reported to the Rust test as a failure
        return {"error": f"{type(e).__name__}: {e}"}
    return {name: getattr(config, name) for name in FIELDS}


def plain(value):
    """JSON has no NaN or infinity; show them as text so a mangled value still compares unequal."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return f"<float {value}>"
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def main():
    cases = json.load(sys.stdin)
    json.dump([plain(effective_config(argv)) for argv in cases], sys.stdout, allow_nan=False)


if __name__ == "__main__":
    main()
