# shellcheck shell=bash
# Sourced library: Python venvs of pinned packages, cached in the home directory; the pinned
# lm-evaluation-harness one among them.
#
#   source scripts/lib/venv.sh
#   venv=$(lmeval_venv)          # path on stdout, progress on stderr
#   "$venv/bin/lm_eval" run ...
#   venv=$(pinned_venv DIR bin/TOOL "tool==1.2 other==3.4")
#
# The lm-eval venv: ${LMEVAL_VENV:-$HOME/.cache/lm-eval-aas/venv-0.4.13}. A marker file
# ($venv/.lm-eval-aas-installed) holding the pinned spec is written only after
# a successful install, so an interrupted install or a changed pin reinstalls.
# Concurrent callers serialise on a flock'd lock file next to the venv.
# Safe under `set -euo pipefail`; does not change the caller's shell options.

LMEVAL_PIN_SPEC="${LMEVAL_PIN_SPEC:-lm-eval[api]==0.4.13}"

# The venv DIR with the pip requirements SPEC installed; prints DIR. PROBE is a file under DIR the install
# provides (bin/lm_eval); CHECK, when given, Python code run in the venv before the marker is written.
#   pinned_venv DIR PROBE SPEC [CHECK]
pinned_venv() {
    local venv=$1 probe=$2 spec=$3 check=${4:-}
    local marker="$venv/.lm-eval-aas-installed"

    # Fast path: no lock needed when the marker already matches.
    if [[ -x "$venv/$probe" && -f "$marker" && "$(cat "$marker" 2>/dev/null)" == "$spec" ]]; then
        printf '%s\n' "$venv"
        return 0
    fi

    mkdir -p "$(dirname "$venv")" || return 1
    local lock="$venv.lock"
    (
        set -euo pipefail
        exec 9>"$lock"
        if ! flock -n 9; then
            echo "pinned_venv: another install holds $lock, waiting" >&2
            flock 9
        fi
        # Re-check under the lock: another caller may have just finished.
        if [[ -x "$venv/$probe" && -f "$marker" && "$(cat "$marker")" == "$spec" ]]; then
            exit 0
        fi
        rm -f "$marker"
        if [[ ! -x "$venv/bin/python" ]]; then
            echo "pinned_venv: creating venv $venv" >&2
            python3 -m venv "$venv" >&2
        fi
        echo "pinned_venv: installing $spec into $venv" >&2
        # pip's cache stays in $HOME (the default ~/.cache/pip unless PIP_CACHE_DIR is set).
        # shellcheck disable=SC2086
        PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}" \
            "$venv/bin/python" -m pip install --disable-pip-version-check -q $spec >&2
        if [[ -n "$check" ]]; then
            "$venv/bin/python" -c "$check" >&2
        fi
        printf '%s' "$spec" > "$marker.tmp"
        mv -f "$marker.tmp" "$marker"
        echo "pinned_venv: ready" >&2
    ) || { echo "pinned_venv: install failed (venv $venv)" >&2; return 1; }
    printf '%s\n' "$venv"
}

lmeval_venv() {
    pinned_venv "${LMEVAL_VENV:-$HOME/.cache/lm-eval-aas/venv-0.4.13}" bin/lm_eval "$LMEVAL_PIN_SPEC pyyaml" \
        'import lm_eval, yaml'
}
