# Sourced by the infra scripts and the Makefile: pinned tool virtualenvs, created on first use and
# reinstalled whenever their requirements file changes. Expects $PYTHON and the repository root
# as cwd.
#
# uv installs them (pinned in infra/requirements-uv.txt, itself installed with pip into .venv-uv):
# with pip's cache warm, pip spent 50-75 s of CPU per virtualenv resolving, unpacking and
# byte-compiling, about four minutes of a fresh `make test` on two cores; uv takes seconds.
# Byte code is compiled on first import instead, and only for the modules a tool imports.

# _venv_locked DIR COMMAND...: runs COMMAND holding DIR's lock. Two scripts may need the same
# virtualenv at once (make test builds with SAM in the background while the template lint uses
# the same SAM CLI): one installs, the other waits for it and then finds the stamp up to date.
# COMMAND runs as the left side of `||`, where bash ignores `set -e`: the install functions
# below return at their first failed step themselves, before the stamp is written.
_venv_locked() {
    local dir="$1" lock status=0
    shift
    exec {lock}>"$dir.lock"
    flock "$lock"
    "$@" || status=$?
    flock -u "$lock"
    exec {lock}>&-
    return "$status"
}

# _venv_digest FILE...: one digest of the files an install depends on.
_venv_digest() {
    cat "$@" | sha256sum | cut -d' ' -f1
}

# _venv_fresh DIR FILE...: true when DIR was installed from FILE... as they are now.
_venv_fresh() {
    local dir="$1"
    shift
    [[ -x "$dir/bin/python" && "$(cat "$dir/.requirements.sha256" 2>/dev/null || true)" == "$(_venv_digest "$@")" ]]
}

_venv_stamp() {
    local dir="$1"
    shift
    _venv_digest "$@" > "$dir/.requirements.sha256"
    # A venv is never committed: make it ignore itself whatever the project's .gitignore says.
    [[ -f "$dir/.gitignore" ]] || echo '*' > "$dir/.gitignore"
}

_uv_install() {
    local dir=.venv-uv req=infra/requirements-uv.txt
    _venv_fresh "$dir" "$req" && return 0
    echo "==> installing $req into $dir (pip)"
    "$PYTHON" -m venv --clear "$dir" || return
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req" || return
    _venv_stamp "$dir" "$req"
}

_venv_install() {
    local dir="$1" req="$2" python
    _venv_fresh "$@" && return 0
    python="$(command -v "$PYTHON")" || return
    echo "==> installing $req into $dir"
    # --clear: a reinstall starts from nothing, so a pin removed from the file is gone too.
    # UV_PYTHON_DOWNLOADS=never: the machine's Python ($PYTHON), never one uv would download.
    UV_PYTHON_DOWNLOADS=never .venv-uv/bin/uv venv --quiet --clear --python "$python" "$dir" || return
    UV_PYTHON_DOWNLOADS=never .venv-uv/bin/uv pip install --quiet --python "$dir/bin/python" -r "$req" || return
    _venv_stamp "$@"
}

# ensure_venv DIR REQUIREMENTS [FILE...]: DIR with REQUIREMENTS installed (once; again when
# REQUIREMENTS or one of the FILEs it refers to changes, e.g. the pyproject.toml of an editable
# install).
ensure_venv() {
    _venv_locked .venv-uv _uv_install
    _venv_locked "$1" _venv_install "$@"
}
