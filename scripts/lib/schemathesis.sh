# shellcheck shell=bash
# Sourced by scripts/test: schemathesis (PyPI), which proves openapi/openapi.json against the running service
# (tests/contract.rs, tests/k8s_contract.rs). Installed once, pinned, into a venv under ~/.cache/lm-eval-aas
# (pinned_venv of scripts/lib/venv.sh, which its callers source).

SCHEMATHESIS_PIN="schemathesis==4.32.5"

# Prints the path of the `st` executable, installing it first if needed.
schemathesis_binary() {
    local venv
    venv=$(pinned_venv "$HOME/.cache/lm-eval-aas/schemathesis-venv" bin/st "$SCHEMATHESIS_PIN") || return 1
    echo "$venv/bin/st"
}
