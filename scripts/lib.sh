# shellcheck shell=bash
# Shared by scripts/test and scripts/up: sourced, not run.
#
#   apt_install PKG...   install Debian packages (with sudo when not root), without letting
#                        their maintainer scripts start system services
#   ensure_venv          create .venv if absent or broken, then `pip install -e '.[test]'`
#                        whenever pyproject.toml changed since the last install

SHOAL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# Debian installs daemons into /usr/sbin, which a non-login PATH may lack.
case ":$PATH:" in
    *:/usr/sbin:*) ;;
    *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;;
esac
export PATH

say() {
    printf '\n== %s ==\n' "$*" >&2
}

have() {
    command -v "$1" >/dev/null 2>&1
}

apt_install() {
    say "apt-get install $*"
    # Packages like docker-registry, redis-server and nginx start a system service on
    # install; the tests start their own on free ports, so forbid that (invoke-rc.d's
    # policy-rc.d protocol: exit 101 = action forbidden) unless a policy already exists.
    local policy=/usr/sbin/policy-rc.d added=0 rc=0
    if [ ! -e "$policy" ]; then
        $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        added=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
    if [ "$rc" -eq 0 ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" || rc=$?
    fi
    if [ "$added" -eq 1 ]; then
        $SUDO rm -f "$policy"
    fi
    return "$rc"
}

# A subshell, so that its `cd` does not move the caller.
ensure_venv() (
    local py=${PYTHON:-python3}
    if ! have "$py"; then
        apt_install python3 python3-venv
    fi
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "shoal needs Python >= 3.11; $py is $("$py" --version 2>&1). Set PYTHON=..." >&2
        return 1
    fi
    cd "$SHOAL_ROOT" || return
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        # Debian splits ensurepip out of python3 into python3-venv.
        if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
            apt_install python3-venv
        fi
        say "create .venv with $py"
        rm -rf .venv
        "$py" -m venv .venv
    fi
    local stamp=.venv/.shoal-installed want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $(.venv/bin/python -V 2>&1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c 'import peer, tracker' 2>/dev/null; then
        say "pip install -e '.[test]'"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
        printf '%s\n' "$want" > "$stamp"
    fi
)
