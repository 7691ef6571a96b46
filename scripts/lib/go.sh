# shellcheck shell=bash
# Sourced library: tools built once from the Go module proxy into ~/.cache/lm-eval-aas/bin under versioned
# names, so a cache hit is a file test.

# Builds a Go binary into $HOME/.cache/lm-eval-aas/bin/NAME-VERSION unless it is there; prints its path.
#   go_binary NAME VERSION BUILD-COMMAND...   (the command gets the output path as its last argument)
go_binary() {
    local name=$1 version=$2
    shift 2
    local binary="$HOME/.cache/lm-eval-aas/bin/$name-$version"
    if [[ ! -x "$binary" ]]; then
        mkdir -p "$HOME/.cache/lm-eval-aas/bin"
        local build
        build=$(mktemp -d "${TMPDIR:-/tmp}/$name-build.XXXXXX")
        echo "building $name $version from the Go module proxy (once)" >&2
        "$@" "$build/$name" >&2
        mv "$build/$name" "$binary"
        rmdir "$build"
    fi
    echo "$binary"
}

