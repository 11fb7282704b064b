# Sourced by the infra scripts: pinned tool virtualenvs, created on first use and reinstalled
# whenever their requirements file changes. Expects $PYTHON and the repository root as cwd.

# ensure_venv DIR REQUIREMENTS: create DIR if missing, (re)install when the pins changed.
ensure_venv() {
    local dir="$1" req="$2" stamp want lock
    # Two scripts may need the same virtualenv at once (make test builds with SAM in the
    # background while the template lint uses the same SAM CLI): one installs, the other waits
    # for it and then finds the stamp up to date.
    exec {lock}>"$dir.lock"
    flock "$lock"
    stamp="$dir/.requirements.sha256"
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ ! -x "$dir/bin/python" ]]; then
        echo "==> creating $dir"
        "$PYTHON" -m venv "$dir"
    fi
    # A venv is never committed: make it ignore itself whatever the project's .gitignore says.
    [[ -f "$dir/.gitignore" ]] || echo '*' > "$dir/.gitignore"
    if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
        echo "==> installing $req into $dir"
        "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req"
        echo "$want" > "$stamp"
    fi
    flock -u "$lock"
    exec {lock}>&-
}
