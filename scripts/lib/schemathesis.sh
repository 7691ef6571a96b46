# shellcheck shell=bash
# Sourced by scripts/test: schemathesis (PyPI), which proves openapi/openapi.json against the running service
# (tests/contract.rs, tests/k8s_contract.rs). Installed once, pinned, into a venv under ~/.cache/lm-eval-aas.

SCHEMATHESIS_PIN="schemathesis==4.32.5"

# Prints the path of the `st` executable, installing it first if needed.
schemathesis_binary() {
    local venv="$HOME/.cache/lm-eval-aas/schemathesis-venv"
    if [[ ! -x "$venv/bin/st" || "$(cat "$venv/.installed" 2>/dev/null)" != "$SCHEMATHESIS_PIN" ]]; then
        echo "installing $SCHEMATHESIS_PIN (once)" >&2
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}" \
            "$venv/bin/pip" install --disable-pip-version-check -q "$SCHEMATHESIS_PIN" >&2
        printf '%s' "$SCHEMATHESIS_PIN" >"$venv/.installed"
    fi
    echo "$venv/bin/st"
}
