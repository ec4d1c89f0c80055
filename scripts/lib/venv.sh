# Sourced by scripts/serve and scripts/test (from the checkout's root): .venv with the package
# installed in editable mode, installed again only when pyproject.toml changed (its hash is kept
# in a stamp file in .venv). Code changes need no install; a restart needs no network.

# ensure_venv SPEC [SATISFIED_BY...]: install SPEC ('.[postgres]', '.[test]') unless the stamp
# of SPEC, or of a SPEC that includes it, matches the current pyproject.toml.
ensure_venv() {
    local spec=$1 hash stamp
    hash=$( (sha256sum 2>/dev/null || shasum -a 256) <pyproject.toml | cut -d' ' -f1)
    [ -x .venv/bin/python ] || python3 -m venv .venv
    if [ -x .venv/bin/openimis-mediator ]; then
        for stamp in "$@"; do
            [ "$(cat "$(_stamp "$stamp")" 2>/dev/null)" = "$hash" ] && return 0
        done
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
    printf '%s\n' "$hash" >"$(_stamp "$spec")"
}

_stamp() {  # '.[test]' -> .venv/.pyproject-sha256-test
    local extras=${1//[^a-z]/}
    printf '%s' ".venv/.pyproject-sha256${extras:+-$extras}"
}
