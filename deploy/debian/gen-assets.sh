#!/usr/bin/env bash
# Generates the Debian package's derived files into OUT_DIR (cargo-deb's assets
# target/debian-assets/*, see [package.metadata.deb] in Cargo.toml), using BIN, a binary that
# runs on the build machine (so a cross-build still works):
#   man/*.1            `edge-agent man --dir`: edge-agent(1) and the page of each command it
#                      refers to (edge-agent-run(1), ...)
#   edge-agent.bash    `edge-agent completions bash`
#   _edge-agent        `edge-agent completions zsh`
#   edge-agent.yaml    deploy/edge-agent.yaml, the one documented default, with the broker restart
#                      the package allows (edge-agent.rules) as bridge.restart_command
# Each output is checked; any surprise fails the build.
set -euo pipefail

usage() { echo "usage: $0 BIN OUT_DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
bin=$1
out=$2
cd "$(dirname "$0")/../.."

fail() { echo "gen-assets: $*" >&2; exit 1; }

[ -x "$bin" ] || fail "$bin is not an executable"
rm -rf "$out.tmp"
mkdir -p "$out.tmp"

"$bin" man >"$out.tmp/edge-agent.1" || fail "'$bin man' failed (does this edge-agent have the man command?)"
grep -q '^\.TH edge-agent 1' "$out.tmp/edge-agent.1" || fail "'$bin man' printed no '.TH edge-agent 1' header"
grep -q '^\.SH SYNOPSIS' "$out.tmp/edge-agent.1" || fail "'$bin man' printed no SYNOPSIS section"
rm "$out.tmp/edge-agent.1"
# The package ships the --dir set: its edge-agent.1 lists only commands that have a page (the
# stdout page also lists clap's `help`, which has none).
"$bin" man --dir "$out.tmp/man" || fail "'$bin man --dir' failed"
grep -q '^\.TH edge-agent 1' "$out.tmp/man/edge-agent.1" || fail "'$bin man --dir' wrote no edge-agent.1"
# Every page the main page refers to (SEE ALSO) must be there.
for ref in $(grep -o 'edge\\-agent\\-[a-z\\-]*(1)' "$out.tmp/man/edge-agent.1" | sed 's/\\//g; s/(1)$//' | sort -u); do
    [ -f "$out.tmp/man/$ref.1" ] || fail "edge-agent(1) refers to $ref(1), which 'man --dir' did not write"
done
for page in "$out.tmp"/man/*; do
    case $page in *.1) ;; *) fail "'man --dir' wrote $page, not a section 1 page" ;; esac
done

"$bin" completions bash >"$out.tmp/edge-agent.bash" || fail "'$bin completions bash' failed"
grep -Eq '^[[:space:]]*complete .*edge-agent$' "$out.tmp/edge-agent.bash" ||
    fail "'$bin completions bash' registers no completion for edge-agent"
bash -n "$out.tmp/edge-agent.bash" || fail "the bash completion script does not parse"

"$bin" completions zsh >"$out.tmp/_edge-agent" || fail "'$bin completions zsh' failed"
[ "$(head -n 1 "$out.tmp/_edge-agent")" = "#compdef edge-agent" ] ||
    fail "the zsh completion does not start with '#compdef edge-agent'"

# The Debian configuration: the documented default with one line changed. The edit is checked
# (exactly that line differs), so a reworded default fails here instead of shipping unchanged.
src=deploy/edge-agent.yaml
from='  restart_command: []'
to='  restart_command: [systemctl, --no-ask-password, try-restart, mosquitto.service]'
[ "$(grep -cxF -- "$from" "$src")" -eq 1 ] || fail "$src has no single line '$from' to replace"
sed "s/^  restart_command: \[\]\$/$to/" "$src" >"$out.tmp/edge-agent.yaml"
changed=$(diff "$src" "$out.tmp/edge-agent.yaml" | grep -c '^[<>]' || true)
[ "$changed" -eq 2 ] && grep -qxF -- "$to" "$out.tmp/edge-agent.yaml" ||
    fail "the restart_command edit of $src did not apply as one changed line"
# The agent itself must accept the result, with the new value.
"$bin" --config "$out.tmp/edge-agent.yaml" config show >"$out.tmp/config-show.txt" ||
    fail "edge-agent rejects the generated $out/edge-agent.yaml"
grep -q 'try-restart' "$out.tmp/config-show.txt" ||
    fail "'config show' of the generated configuration has no try-restart restart_command"
rm "$out.tmp/config-show.txt"

rm -rf "$out"
mv "$out.tmp" "$out"
echo "gen-assets: wrote $(cd "$out" && echo *) to $out"
