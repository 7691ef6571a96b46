# shellcheck shell=bash
# Sourced library: ensures the pinned lm-evaluation-harness venv exists.
#
#   source scripts/lib/venv.sh
#   venv=$(lmeval_venv)          # path on stdout, progress on stderr
#   "$venv/bin/lm_eval" run ...
#
# Layout: ${LMEVAL_VENV:-$HOME/.cache/lm-eval-aas/venv-0.4.13}. A marker file
# ($venv/.lm-eval-aas-installed) holding the pinned spec is written only after
# a successful install, so an interrupted install or a changed pin reinstalls.
# Concurrent callers serialise on a flock'd lock file next to the venv.
# Safe under `set -euo pipefail`; does not change the caller's shell options.

LMEVAL_PIN_SPEC="${LMEVAL_PIN_SPEC:-lm-eval[api]==0.4.13}"

lmeval_venv() {
    local venv="${LMEVAL_VENV:-$HOME/.cache/lm-eval-aas/venv-0.4.13}"
    local marker="$venv/.lm-eval-aas-installed"
    local spec="$LMEVAL_PIN_SPEC pyyaml"

    # Fast path: no lock needed when the marker already matches.
    if [[ -x "$venv/bin/lm_eval" && -f "$marker" && "$(cat "$marker" 2>/dev/null)" == "$spec" ]]; then
        printf '%s\n' "$venv"
        return 0
    fi

    mkdir -p "$(dirname "$venv")" || return 1
    local lock="$venv.lock"
    (
        set -euo pipefail
        exec 9>"$lock"
        if ! flock -n 9; then
            echo "lmeval_venv: another install holds $lock, waiting" >&2
            flock 9
        fi
        # Re-check under the lock: another caller may have just finished.
        if [[ -x "$venv/bin/lm_eval" && -f "$marker" && "$(cat "$marker")" == "$spec" ]]; then
            exit 0
        fi
        rm -f "$marker"
        if [[ ! -x "$venv/bin/python" ]]; then
            echo "lmeval_venv: creating venv $venv" >&2
            python3 -m venv "$venv" >&2
        fi
        echo "lmeval_venv: installing $spec into $venv" >&2
        # pip's cache stays in $HOME (the default ~/.cache/pip unless PIP_CACHE_DIR is set).
        # shellcheck disable=SC2086
        PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}" \
            "$venv/bin/python" -m pip install --disable-pip-version-check -q $spec >&2
        "$venv/bin/python" -c 'import lm_eval, yaml' >&2
        printf '%s' "$spec" > "$marker.tmp"
        mv -f "$marker.tmp" "$marker"
        echo "lmeval_venv: ready" >&2
    ) || { echo "lmeval_venv: install failed (venv $venv)" >&2; return 1; }
    printf '%s\n' "$venv"
}
