"""Writes the shell scripts of a GitLab CI file or a Tekton file into a directory, for shellcheck.

    python ci_scripts.py gitlab|tekton FILE OUTDIR     one OUTDIR/NN-NAME.sh per job or step; names on stdout

GitLab: a job's before_script, script and after_script lines, as the runner's shell runs them. Tekton: each step's
`script` (a `#!` line kept, else /bin/sh as Tekton uses), with Tekton's `$(params.x)`, `$(results.x.path)`,
`$(workspaces.x.path)`, `$(context.x)` and `$(tasks.x)` replaced by the path-like words Tekton puts there, so
shellcheck does not read them as command substitutions. Runs in the ci-lint venv (ruamel.yaml comes with
check-jsonschema).
"""

import pathlib
import re
import sys

from ruamel.yaml import YAML

TEKTON_VARIABLE = re.compile(r"\$\((?:params|results|workspaces|context|tasks|steps|step)\.[^)]*\)")


def gitlab(document):
    for name, job in (document or {}).items():
        if not isinstance(job, dict) or "script" not in job or name.startswith("."):
            continue
        lines = []
        for key in ("before_script", "script", "after_script"):
            value = job.get(key) or []
            lines.extend([value] if isinstance(value, str) else value)
        yield name, "#!/bin/sh\n" + "\n".join(str(line) for line in lines) + "\n"


def tekton(document):
    spec = (document or {}).get("spec") or {}
    for step in spec.get("steps") or []:
        script = step.get("script")
        if script:
            script = TEKTON_VARIABLE.sub("/tekton/var", script)
            if not script.startswith("#!"):
                script = "#!/bin/sh\n" + script
            yield f"{document['metadata']['name']}.{step.get('name', 'step')}", script


def main():
    kind, path, outdir = sys.argv[1:]
    extract = {"gitlab": gitlab, "tekton": tekton}[kind]
    count = 0
    for document in YAML(typ="safe").load_all(pathlib.Path(path).read_text()):
        for name, script in extract(document):
            count += 1
            target = pathlib.Path(outdir) / f"{count:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.sh"
            target.write_text(script)
            print(target)


if __name__ == "__main__":
    main()
