"""Checks the Dockerfile without a Docker engine (scripts/check-dockerfile).

1. Parses it: stages, `--target` names, `COPY --from` references, USER of the final images.
2. Replays the `runner` stage's ENV, COPY and RUN instructions into a directory standing in for the image's
   root (paths under /opt and /usr/local are rewritten into it), so the Python environment is built exactly
   as the Dockerfile builds it (pip may use its cache here), then runs our driver in it on a shipped task.

Prints one `--- PASS: name` / `--- FAIL: name` line per check; exits 1 if any failed.
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
failures = []


def check(name, ok, detail=""):
    print(f"--- {'PASS' if ok else 'FAIL'}: {name}" + (f" ({detail})" if detail else ""), flush=True)
    if not ok:
        failures.append(name)


def instructions(path):
    """(instruction, arguments) pairs with continuation lines joined and comments dropped."""
    logical, current = [], ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1] + " "
                continue
            current += line
            logical.append(current.strip())
            current = ""
    result = []
    for text in logical:
        keyword, _, rest = text.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(parsed):
    found, current = [], None
    for keyword, rest in parsed:
        if keyword == "FROM":
            match = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            current = {"image": match.group(1), "name": match.group(2), "steps": []}
            found.append(current)
        elif current is not None:
            current["steps"].append((keyword, rest))
    return found


def env_pairs(rest):
    words = shlex.split(rest)
    if len(words) >= 2 and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    return [tuple(word.split("=", 1)) for word in words]


def main():
    dockerfile = os.path.join(REPO, "Dockerfile")
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "target/debug/lm-eval-aas")
    parsed = instructions(dockerfile)
    found = stages(parsed)
    names = [s["name"] for s in found]
    check("stages builder, runner, service exist", {"builder", "runner", "service"} <= set(names), f"{names}")
    check("the default target (last stage) is the service", names[-1:] == ["service"])
    for stage in found:
        for keyword, rest in stage["steps"]:
            ref = re.search(r"--from=(\S+)", rest) if keyword == "COPY" else None
            if ref:
                known = ref.group(1) in names[: names.index(stage["name"])]
                check(f"COPY --from={ref.group(1)} in {stage['name']} names an earlier stage", known)
    by_name = {s["name"]: s for s in found}
    for name in ("runner", "service"):
        users = [rest for keyword, rest in by_name.get(name, {"steps": []})["steps"] if keyword == "USER"]
        uid = users[-1].split(":")[0] if users else "0"
        check(f"{name} runs as a numeric non-root USER", uid.isdigit() and uid != "0", f"USER {users[-1:]}")
    service_steps = [k for k, _ in by_name["service"]["steps"]]
    check("the service stage holds only the binary (no RUN, no shell needed)", "RUN" not in service_steps)

    runner = by_name["runner"]
    fingerprint = hashlib.sha256(json.dumps(runner["steps"]).encode())
    for keyword, rest in runner["steps"]:
        if keyword == "COPY" and "--from" not in rest:
            source = shlex.split(rest)[0]
            path = os.path.join(REPO, source)
            if os.path.isfile(path):
                fingerprint.update(open(path, "rb").read())
    cache = os.path.join(os.path.expanduser("~/.cache/lm-eval-aas"), "runner-root")
    root = os.path.join(cache, fingerprint.hexdigest()[:16])

    def inside(text):
        return re.sub(r"(?<![\w/])/(opt|usr/local)/", lambda m: f"{root}/{m.group(1)}/", text)

    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for keyword, rest in runner["steps"]:
        if keyword == "ENV":
            for key, value in env_pairs(rest):
                env[key] = inside(value.replace("$PATH", env.get("PATH", "")))
    built = os.path.exists(os.path.join(root, ".complete"))
    if not built:
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        for keyword, rest in runner["steps"]:
            if keyword == "COPY" and "--from" not in rest:
                source, target = shlex.split(rest)
                destination = inside(target)
                os.makedirs(os.path.dirname(destination), exist_ok=True)
                src = os.path.join(REPO, source)
                if os.path.isdir(src):
                    shutil.copytree(src, destination, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(src, destination)
            elif keyword == "RUN":
                # `python` of the base image python:3.11 is this machine's python3.11.
                command = inside(rest).replace("python -m venv", f"{sys.executable} -m venv")
                # The image must not keep pip's cache; the replay may use the one in $HOME (same packages).
                command = command.replace("--no-cache-dir", "")
                print(f"replaying RUN {command}", flush=True)
                run_env = dict(env, PIP_CACHE_DIR=os.path.expanduser("~/.cache/pip"), HOME=os.path.expanduser("~"))
                subprocess.run(["sh", "-c", command], check=True, env=run_env)
        open(os.path.join(root, ".complete"), "w").close()
    check("runner environment replayed from the Dockerfile", True, "cached" if built else "built")
    lm_eval = shutil.which("lm_eval", path=env["PATH"])
    check("lm_eval is on the runner's PATH", lm_eval is not None and lm_eval.startswith(root), f"{lm_eval}")

    # COPY --from=builder: our binary, then the driver on a shipped task with the image's environment.
    bin_dir = os.path.join(root, "usr/local/bin")
    os.makedirs(bin_dir, exist_ok=True)
    shutil.copy(binary, os.path.join(bin_dir, "lm-eval-aas"))
    work = tempfile.mkdtemp(prefix="lm-eval-aas-runner-check.")
    tasks = inside("/opt/lm-eval-aas/tasks")
    argv = [os.path.join(bin_dir, "lm-eval-aas"), "driver", "--echo", "--", "lm_eval", "run", "--model", "dummy",
            "--tasks", "lmeval_aas_mc", "--limit", "2", "--include_path", tasks, "--output_path", f"{work}/out"]
    run_env = dict(env, HOME="/tmp")
    result = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=600)
    results = [f for d, _, files in os.walk(f"{work}/out") for f in files if f.startswith("results_")]
    ok = result.returncode == 0 and results and "lmeval_aas_mc" in result.stdout
    check("the driver runs lm_eval in the runner environment", bool(ok), f"exit {result.returncode}")
    if not ok:
        print(result.stdout[-3000:], result.stderr[-3000:])
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
