#!/usr/bin/env bash
# Checks the Debian package on this machine (`make deb-check`; CI): lintian, the unit, and a full
# install -> reinstall -> upgrade -> remove -> purge cycle, twice (a stock Debian 12
# mosquitto.conf, then one without include_dir). Needs root and a Debian 12 machine where
# edge-agent is not installed; installs lintian, systemd (systemd-analyze) and mosquitto when
# missing. The machine's /etc/mosquitto/mosquitto.conf is set aside for the run and restored on
# every exit, and the package is purged if a check fails half-way.
#
# usage: deploy/debian/check.sh target/debian/edge-agent_<version>_<arch>.deb
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

cd "$(dirname "$0")/../.."
FIXTURE=deploy/debian/tests/mosquitto.conf
MOSQUITTO_CONF=/etc/mosquitto/mosquitto.conf
BACKUP="$MOSQUITTO_CONF.edge-agent-backup"
BRIDGE_DIR=/etc/edge-agent/mosquitto-conf
STATE_DIR=/var/lib/edge-agent
MARKER="# edge-agent: its cloud bridge files (added by the edge-agent package, removed on purge)"
INCLUDE="include_dir $BRIDGE_DIR"
# Every file the package ships, where it must land (plus a man page per command: MAN_PAGES, read
# from the installed `edge-agent man --dir`). /lib/systemd/system is /usr/lib/systemd/system
# on Debian 12 (merged /usr); cargo-deb ships units under /usr/lib.
FILES=(
    /usr/bin/edge-agent
    /etc/edge-agent/edge-agent.yaml
    /usr/lib/systemd/system/edge-agent.service
    /usr/share/man/man1/edge-agent.1.gz
    /usr/share/bash-completion/completions/edge-agent
    /usr/share/zsh/vendor-completions/_edge-agent
    /usr/share/polkit-1/rules.d/edge-agent.rules
    /usr/share/doc/edge-agent/copyright
    /usr/share/doc/edge-agent/changelog.Debian.gz
    /usr/share/lintian/overrides/edge-agent
)

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() {
    printf '\ncheck.sh: FAILED: %s\n' "$*" >&2
    exit 1
}

[ $# -eq 1 ] || fail "usage: $0 PACKAGE.deb (exactly one; got: $*)"
DEB=$1
[ -f "$DEB" ] || fail "no package at $DEB (run make deb)"
[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs and purges the package)"
[ -f "$FIXTURE" ] || fail "missing test fixture $FIXTURE"

step "precondition: edge-agent is not installed and there is no edge-agent user"
if dpkg-query -W -f='${Status}' edge-agent 2>/dev/null | grep -qv '^unknown ok not-installed$'; then
    fail "edge-agent is installed here ($(dpkg-query -W -f='${Status}' edge-agent)); purge it first: dpkg -P edge-agent"
fi
getent passwd edge-agent >/dev/null && fail "a user edge-agent exists already"
[ ! -e "$BACKUP" ] || fail "$BACKUP exists already"
ok "clean machine"

step "tools: lintian, systemd-analyze, mosquitto"
missing=()
command -v lintian >/dev/null || missing+=(lintian)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v mosquitto >/dev/null || missing+=(mosquitto)
if [ ${#missing[@]} -gt 0 ]; then
    echo "    installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
ok "$(lintian --version), $(systemd-analyze --version | head -n 1), $(mosquitto -h 2>&1 | head -n 1)"

WORK=$(mktemp -d)
broker_pid=
created_mosquitto_dir=no
created_confd=no
had_conf=no

# Runs on every exit: stop the test broker, purge a half-checked package, restore mosquitto.conf.
cleanup() {
    local status=$?
    set +e
    [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    if [ $status -ne 0 ] && dpkg-query -W -f='${Status}' edge-agent 2>/dev/null | grep -Eq 'ok (installed|config-files)|half'; then
        echo "check.sh: purging the half-checked package" >&2
        dpkg -P edge-agent >&2
    fi
    if [ "$had_conf" = yes ]; then
        cp -a "$WORK/mosquitto.conf.machine" "$MOSQUITTO_CONF" && echo "check.sh: restored this machine's $MOSQUITTO_CONF" >&2
    else
        rm -f "$MOSQUITTO_CONF"
    fi
    rm -f "$BACKUP"
    [ "$created_confd" = yes ] && rmdir /etc/mosquitto/conf.d
    [ "$created_mosquitto_dir" = yes ] && rmdir /etc/mosquitto
    rm -rf "$WORK"
    exit $status
}
trap cleanup EXIT

# Debian's stock mosquitto.conf in place of the machine's own, for the duration of the checks.
if [ -e "$MOSQUITTO_CONF" ]; then
    cp -a "$MOSQUITTO_CONF" "$WORK/mosquitto.conf.machine"
    had_conf=yes
fi
if [ ! -d /etc/mosquitto ]; then
    mkdir /etc/mosquitto
    created_mosquitto_dir=yes
fi
# The stock file includes /etc/mosquitto/conf.d, which mosquitto needs to exist.
if [ ! -d /etc/mosquitto/conf.d ]; then
    mkdir /etc/mosquitto/conf.d
    created_confd=yes
fi

PKG_VERSION=$(dpkg-deb -f "$DEB" Version)
PKG_ARCH=$(dpkg-deb -f "$DEB" Architecture)
UPSTREAM_VERSION=${PKG_VERSION%-*}

step "control fields of $DEB"
[ "$(dpkg-deb -f "$DEB" Package)" = edge-agent ] || fail "Package is not edge-agent"
[ "$PKG_ARCH" = "$(dpkg --print-architecture)" ] ||
    fail "Architecture $PKG_ARCH is not this machine's $(dpkg --print-architecture)"
changelog_version=$(sed -n '1s/^edge-agent (\([^)]*\)).*/\1/p' deploy/debian/changelog)
[ "$PKG_VERSION" = "$changelog_version" ] ||
    fail "Version $PKG_VERSION differs from deploy/debian/changelog's $changelog_version"
depends=$(dpkg-deb -f "$DEB" Depends)
echo "    Depends: $depends"
# Only what the binary needs (dpkg-shlibdeps: libc6), the CA store reqwest trusts, and adduser
# for postinst.
dep_names=$(tr ',' '\n' <<<"$depends" | sed 's/^ *//; s/ .*//' | sort | tr '\n' ' ')
[ "$dep_names" = "adduser ca-certificates libc6 " ] || fail "Depends is not exactly adduser, ca-certificates, libc6: $depends"
recommends=$(dpkg-deb -f "$DEB" Recommends)
[ "$recommends" = "mosquitto (>= 2.0), polkitd" ] || fail "unexpected Recommends: $recommends"
conffiles=$(dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles)
[ "$conffiles" = /etc/edge-agent/edge-agent.yaml ] || fail "conffiles is not exactly /etc/edge-agent/edge-agent.yaml: $conffiles"
ok "edge-agent $PKG_VERSION $PKG_ARCH; conffile /etc/edge-agent/edge-agent.yaml"

step "maintainer scripts: restart after an upgrade, no stop before it"
mkdir "$WORK/control"
dpkg-deb -e "$DEB" "$WORK/control"
for script in postinst prerm postrm; do
    [ -x "$WORK/control/$script" ] || fail "no executable $script"
    sh -n "$WORK/control/$script" || fail "$script does not parse as sh"
    grep -q '#DEBHELPER#' "$WORK/control/$script" && fail "$script still has #DEBHELPER#"
done
grep -q 'deb-systemd-helper enable edge-agent.service' "$WORK/control/postinst" || fail "postinst does not enable edge-agent.service"
# With an old version ($2) it restarts, else it starts: after the new files are unpacked.
grep -q '_dh_action=restart' "$WORK/control/postinst" &&
    grep -qF 'deb-systemd-invoke $_dh_action edge-agent.service' "$WORK/control/postinst" ||
    fail "postinst does not (re)start edge-agent.service"
# prerm may stop the unit only when the package is removed, never on upgrade.
grep -q 'deb-systemd-invoke stop edge-agent.service' "$WORK/control/prerm" || fail "prerm does not stop edge-agent.service on removal"
grep -q '"\$1" = remove' "$WORK/control/prerm" || fail "prerm stops the service for more than remove"
grep -q 'upgrade' "$WORK/control/prerm" && fail "prerm acts on upgrade"
ok "postinst enables and (re)starts; prerm stops only on remove"

step "lintian (no errors, no warnings; info tags printed)"
set +e
lintian --display-info --fail-on error,warning "$DEB" 2>&1 | grep -v 'running with root privileges' | tee "$WORK/lintian.txt"
lintian_status=${PIPESTATUS[0]}
set -e
[ "$lintian_status" -eq 0 ] || fail "lintian exit status $lintian_status"
grep -Eq '^[EW]: ' "$WORK/lintian.txt" && fail "lintian reports errors or warnings"
ok "lintian: no errors, no warnings ($(grep -c '^I: ' "$WORK/lintian.txt" || true) info tags)"

cp "$FIXTURE" "$MOSQUITTO_CONF"

step "dpkg -i (Debian 12's stock mosquitto.conf in place)"
dpkg -i "$DEB"
[ "$(dpkg-query -W -f='${Status} ${Version}' edge-agent)" = "install ok installed $PKG_VERSION" ] ||
    fail "dpkg does not report edge-agent $PKG_VERSION installed"
ok "installed"

step "every file lands where listed"
# The pages of the commands, as the installed binary generates them.
edge-agent man --dir "$WORK/man"
MAN_PAGES=()
for page in "$WORK"/man/*.1; do
    [ "$(basename "$page")" = edge-agent.1 ] && continue
    MAN_PAGES+=("/usr/share/man/man1/$(basename "$page").gz")
done
[ ${#MAN_PAGES[@]} -gt 0 ] || fail "'edge-agent man --dir' wrote no page besides edge-agent.1"
FILES+=("${MAN_PAGES[@]}")
dpkg -L edge-agent >"$WORK/dpkg-L.txt"
for f in "${FILES[@]}"; do
    [ -f "$f" ] || fail "$f is missing"
    grep -qxF "$f" "$WORK/dpkg-L.txt" || fail "$f is not in dpkg -L edge-agent"
    echo "    $f"
done
[ /lib/systemd/system/edge-agent.service -ef /usr/lib/systemd/system/edge-agent.service ] ||
    fail "/lib/systemd/system/edge-agent.service is not the unit"
regular=0
while read -r p; do [ -f "$p" ] && [ ! -L "$p" ] && regular=$((regular + 1)); done <"$WORK/dpkg-L.txt"
[ "$regular" -eq "${#FILES[@]}" ] || fail "the package ships $regular files, the list has ${#FILES[@]}: $(cat "$WORK/dpkg-L.txt")"
[ "$(stat -c '%a %U' /usr/bin/edge-agent)" = "755 root" ] || fail "/usr/bin/edge-agent is not 0755 root"
ok "exactly these ${#FILES[@]} files (${#MAN_PAGES[@]} of them command pages); /lib/systemd/system/edge-agent.service is the unit"

step "the files' contents"
for page in "$WORK"/man/*.1; do
    zcat "/usr/share/man/man1/$(basename "$page").gz" | cmp -s - "$page" ||
        fail "/usr/share/man/man1/$(basename "$page").gz is not what 'edge-agent man --dir' generates"
done
zcat /usr/share/man/man1/edge-agent.1.gz | grep -q '^\.TH edge-agent 1' || fail "the man page has no '.TH edge-agent 1'"
edge-agent completions bash | cmp -s - /usr/share/bash-completion/completions/edge-agent ||
    fail "the bash completion is not 'edge-agent completions bash'"
edge-agent completions zsh | cmp -s - /usr/share/zsh/vendor-completions/_edge-agent ||
    fail "the zsh completion is not 'edge-agent completions zsh'"
bash -n /usr/share/bash-completion/completions/edge-agent || fail "the bash completion does not parse"
[ "$(head -n 1 /usr/share/zsh/vendor-completions/_edge-agent)" = "#compdef edge-agent" ] || fail "the zsh completion lacks '#compdef edge-agent'"
diff <(sed 's/^  restart_command: \[\]$/  restart_command: [systemctl, --no-ask-password, try-restart, mosquitto.service]/' deploy/edge-agent.yaml) \
    /etc/edge-agent/edge-agent.yaml || fail "/etc/edge-agent/edge-agent.yaml is not deploy/edge-agent.yaml with the Debian restart_command"
grep -qx '  restart_command: \[systemctl, --no-ask-password, try-restart, mosquitto.service\]' /etc/edge-agent/edge-agent.yaml ||
    fail "/etc/edge-agent/edge-agent.yaml lacks the Debian restart_command"
grep -q 'action.lookup("unit") == "mosquitto.service"' /usr/share/polkit-1/rules.d/edge-agent.rules || fail "the polkit rule is not about mosquitto.service"
grep -qx 'ExecStart=/usr/bin/edge-agent --config /etc/edge-agent/edge-agent.yaml run' /usr/lib/systemd/system/edge-agent.service || fail "unexpected ExecStart"
ok "man pages and completions as the binary generates them; configuration, polkit rule, unit"

step "postinst: user, group, directories"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd edge-agent) || fail "no user edge-agent"
[ "$uid" -lt 1000 ] || fail "edge-agent is not a system user (uid $uid)"
[ "$(getent group edge-agent | cut -d: -f3)" = "$gid" ] || fail "edge-agent's primary group is not edge-agent"
[ "$home" = "$STATE_DIR" ] || fail "edge-agent's home is $home, not $STATE_DIR"
[ "$shell" = /usr/sbin/nologin ] || fail "edge-agent's shell is $shell, not /usr/sbin/nologin"
[ "$(stat -c '%U:%G %a' "$STATE_DIR")" = "edge-agent:edge-agent 750" ] || fail "$STATE_DIR is $(stat -c '%U:%G %a' "$STATE_DIR")"
[ "$(stat -c '%U:%G %a' "$BRIDGE_DIR")" = "edge-agent:edge-agent 755" ] || fail "$BRIDGE_DIR is $(stat -c '%U:%G %a' "$BRIDGE_DIR")"
ok "system user edge-agent (uid $uid), $STATE_DIR 0750, $BRIDGE_DIR 0755"

step "the service is enabled (deb-systemd-helper, works without systemd running)"
[ -L /etc/systemd/system/multi-user.target.wants/edge-agent.service ] || fail "edge-agent.service is not enabled"
ok "/etc/systemd/system/multi-user.target.wants/edge-agent.service"

step "edge-agent runs as the edge-agent user"
version_out=$(runuser -u edge-agent -- edge-agent --version)
echo "    $version_out"
[ "$version_out" = "edge-agent $UPSTREAM_VERSION" ] || fail "'edge-agent --version' printed '$version_out', expected 'edge-agent $UPSTREAM_VERSION'"
runuser -u edge-agent -- edge-agent --config /etc/edge-agent/edge-agent.yaml config show >/dev/null ||
    fail "the edge-agent user cannot load /etc/edge-agent/edge-agent.yaml"
ok "version $UPSTREAM_VERSION; the configuration loads"

step "systemd-analyze verify edge-agent.service"
set +e
systemd-analyze verify /usr/lib/systemd/system/edge-agent.service >"$WORK/verify.txt" 2>&1
verify_status=$?
set -e
sed 's/^/    | /' "$WORK/verify.txt"
[ "$verify_status" -eq 0 ] || fail "systemd-analyze verify exited with $verify_status"
# It reports bad values, missing commands and a missing Documentation= man page on stderr, and
# exits 0 for some of them: anything printed is a failure.
[ ! -s "$WORK/verify.txt" ] || fail "systemd-analyze verify printed the lines above"
ok "accepted, nothing printed"

# The stock file with the marker and the include line before its first include_dir line (or at
# the end when it has none), computed here independently of postinst's awk.
expected_conf() {
    local src=$1 n
    n=$(grep -n -m 1 -E '^[[:space:]]*include_dir[[:space:]]' "$src" | cut -d: -f1 || true)
    if [ -n "$n" ]; then
        head -n $((n - 1)) "$src"
        printf '%s\n%s\n' "$MARKER" "$INCLUDE"
        tail -n +"$n" "$src"
    else
        cat "$src"
        printf '%s\n%s\n' "$MARKER" "$INCLUDE"
    fi
}

step "mosquitto.conf: include line before the first include_dir, backup kept"
diff <(expected_conf "$FIXTURE") "$MOSQUITTO_CONF" || fail "$MOSQUITTO_CONF is not the stock file with our line before its first include_dir"
cmp -s "$FIXTURE" "$BACKUP" || fail "$BACKUP is not the previous mosquitto.conf"
ok "line $(grep -nxF "$INCLUDE" "$MOSQUITTO_CONF" | cut -d: -f1), before 'include_dir /etc/mosquitto/conf.d'; backup $BACKUP"

free_port() {
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    fail "no free port found"
}

step "mosquitto accepts the edited mosquitto.conf and loads the bridge directory"
# A copy without the machine's pid file, persistence and log file (mosquitto writes them as the
# mosquitto user), logging to stdout; a listener in a file of the bridge directory proves the
# include_dir line works.
port=$(free_port)
sed -e '/^pid_file /d' \
    -e 's|^persistence true$|persistence false|' \
    -e 's|^log_dest file .*|log_dest stdout|' "$MOSQUITTO_CONF" >"$WORK/mosquitto-test.conf"
grep -qxF "$INCLUDE" "$WORK/mosquitto-test.conf" || fail "the test copy lost the include line"
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$BRIDGE_DIR/zz-check-listener.conf"
mosquitto -c "$WORK/mosquitto-test.conf" -v >"$WORK/mosquitto.log" 2>&1 &
broker_pid=$!
listening=no
for _ in $(seq 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        listening=yes
        break
    fi
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
done
sleep 0.3
alive=yes
kill -0 "$broker_pid" 2>/dev/null || alive=no
kill "$broker_pid" 2>/dev/null || true
wait "$broker_pid" 2>/dev/null || true
broker_pid=
rm "$BRIDGE_DIR/zz-check-listener.conf"
sed 's/^/    | /' "$WORK/mosquitto.log"
[ "$alive" = yes ] || fail "mosquitto exited: it does not accept the edited mosquitto.conf"
[ "$listening" = yes ] || fail "mosquitto does not listen on port $port: it did not load the listener in $BRIDGE_DIR"
grep -qi 'error' "$WORK/mosquitto.log" && fail "mosquitto printed an error"
grep -q "Loading config file $BRIDGE_DIR/zz-check-listener.conf" "$WORK/mosquitto.log" || fail "mosquitto did not say it loaded $BRIDGE_DIR/zz-check-listener.conf"
ok "mosquitto $(mosquitto -h 2>&1 | sed -n '1s/.*version \([0-9.]*\).*/\1/p') started with it and listened on port $port from $BRIDGE_DIR"

step "reinstall: an edited configuration stays"
sed -i 's/^  level: info$/  level: debug/' /etc/edge-agent/edge-agent.yaml
echo "# edited by check.sh" >>/etc/edge-agent/edge-agent.yaml
cp /etc/edge-agent/edge-agent.yaml "$WORK/edited.yaml"
dpkg -i "$DEB"
cmp -s "$WORK/edited.yaml" /etc/edge-agent/edge-agent.yaml || fail "reinstalling changed the edited /etc/edge-agent/edge-agent.yaml"
[ "$(grep -cxF "$INCLUDE" "$MOSQUITTO_CONF")" -eq 1 ] || fail "reinstalling added the include line again"
cmp -s "$FIXTURE" "$BACKUP" || fail "reinstalling replaced the backup of the stock mosquitto.conf"
ok "configuration kept, include line once, backup untouched"

step "upgrade to a newer version (the same files repacked as $UPSTREAM_VERSION-99): the edit stays"
dpkg-deb -R "$DEB" "$WORK/next"
sed -i "s/^Version: .*/Version: $UPSTREAM_VERSION-99/" "$WORK/next/DEBIAN/control"
dpkg-deb -b "$WORK/next" "$WORK/next.deb" >/dev/null
dpkg -i "$WORK/next.deb"
[ "$(dpkg-query -W -f='${Version}' edge-agent)" = "$UPSTREAM_VERSION-99" ] || fail "the upgrade did not install"
cmp -s "$WORK/edited.yaml" /etc/edge-agent/edge-agent.yaml || fail "the upgrade changed the edited /etc/edge-agent/edge-agent.yaml"
[ "$(grep -cxF "$INCLUDE" "$MOSQUITTO_CONF")" -eq 1 ] || fail "the upgrade added the include line again"
ok "upgraded; configuration kept, include line once"

step "dpkg -r: the program goes, the configuration, user, state and include line stay"
dpkg -r edge-agent
[ "$(dpkg-query -W -f='${Status}' edge-agent)" = "deinstall ok config-files" ] || fail "edge-agent is not in state config-files"
for f in "${FILES[@]}"; do
    [ "$f" = /etc/edge-agent/edge-agent.yaml ] && continue
    [ ! -e "$f" ] || fail "$f is still there after dpkg -r"
done
cmp -s "$WORK/edited.yaml" /etc/edge-agent/edge-agent.yaml || fail "dpkg -r changed the configuration"
getent passwd edge-agent >/dev/null || fail "dpkg -r removed the user"
[ -d "$STATE_DIR" ] && [ -d "$BRIDGE_DIR" ] || fail "dpkg -r removed the state or bridge directory"
grep -qxF "$INCLUDE" "$MOSQUITTO_CONF" || fail "dpkg -r removed the include line (the bridge files are still there)"
[ "$(readlink /etc/systemd/system/edge-agent.service)" = /dev/null ] || fail "edge-agent.service is not masked after dpkg -r"
ok "program files gone, unit masked; configuration, user, directories and include line kept"

# No trace of the package: every check of the final state after purge.
check_no_trace() {
    local expected_conf=$1 f
    dpkg-query -W -f='${Status}' edge-agent 2>/dev/null | grep -q 'ok installed\|config-files' &&
        fail "dpkg still knows edge-agent: $(dpkg-query -W -f='${Status}' edge-agent)"
    for f in "${FILES[@]}" /lib/systemd/system/edge-agent.service /etc/edge-agent "$STATE_DIR" "$BACKUP" \
        /etc/systemd/system/edge-agent.service /etc/systemd/system/multi-user.target.wants/edge-agent.service \
        /var/lib/systemd/deb-systemd-helper-enabled/edge-agent.service \
        /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/edge-agent.service; do
        [ ! -e "$f" ] && [ ! -L "$f" ] || fail "$f is still there after purge"
    done
    getent passwd edge-agent >/dev/null && fail "the user edge-agent is still there"
    getent group edge-agent >/dev/null && fail "the group edge-agent is still there"
    cmp -s "$expected_conf" "$MOSQUITTO_CONF" || {
        diff "$expected_conf" "$MOSQUITTO_CONF" || true
        fail "$MOSQUITTO_CONF is not back to what it was before the install"
    }
    [ ! -e "$MOSQUITTO_CONF.edge-agent-new" ] || fail "a temporary mosquitto.conf is left"
    ok "no package files, /etc/edge-agent, $STATE_DIR, user, group, enable links or backup; mosquitto.conf as before"
}

step "dpkg -P: no trace left"
dpkg -P edge-agent
check_no_trace "$FIXTURE"

step "a mosquitto.conf without include_dir: the line goes at the end, purge restores the file"
grep -v '^include_dir' "$FIXTURE" >"$WORK/no-include.conf"
cp "$WORK/no-include.conf" "$MOSQUITTO_CONF"
dpkg -i "$DEB"
diff <(expected_conf "$WORK/no-include.conf") "$MOSQUITTO_CONF" || fail "the include line is not at the end"
[ "$(tail -n 1 "$MOSQUITTO_CONF")" = "$INCLUDE" ] || fail "the last line is not the include line"
dpkg -P edge-agent
check_no_trace "$WORK/no-include.conf"

step "an admin's own include line: postinst adds none, purge leaves it and the directory"
cp "$FIXTURE" "$MOSQUITTO_CONF"
printf '%s\n' "$INCLUDE" >>"$MOSQUITTO_CONF"
cp "$MOSQUITTO_CONF" "$WORK/own-include.conf"
dpkg -i "$DEB"
cmp -s "$WORK/own-include.conf" "$MOSQUITTO_CONF" || fail "postinst changed a mosquitto.conf that already includes $BRIDGE_DIR"
[ ! -e "$BACKUP" ] || fail "postinst made a backup without changing mosquitto.conf"
dpkg -P edge-agent 2>"$WORK/purge-stderr.txt"
cmp -s "$WORK/own-include.conf" "$MOSQUITTO_CONF" || fail "purge removed the admin's include line"
[ -d "$BRIDGE_DIR" ] || fail "purge removed $BRIDGE_DIR while mosquitto.conf still includes it"
grep -q 'keeping the directory' "$WORK/purge-stderr.txt" || fail "purge did not say why it kept $BRIDGE_DIR"
getent passwd edge-agent >/dev/null && fail "the user edge-agent is still there"
rmdir "$BRIDGE_DIR" /etc/edge-agent
ok "admin's line and directory kept, with a note"

printf '\ncheck.sh: all checks passed for %s\n' "$DEB"
