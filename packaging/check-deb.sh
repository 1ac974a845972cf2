#!/usr/bin/env bash
# Check a built keygate .deb: unpack it into a scratch root and verify its files,
# conffiles, dependencies, unit, man page, completions, shipped configuration and
# logrotate configuration.
#   packaging/check-deb.sh target/debian/keygate_*.deb
set -euo pipefail
deb="${1:?usage: packaging/check-deb.sh PACKAGE.deb}"
root="$(mktemp -d)"
control="$(mktemp -d)"
trap 'rm -rf "$root" "$control"' EXIT
fail() { echo "check-deb: $*" >&2; exit 1; }

dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$control"

for f in usr/bin/keygate usr/lib/systemd/system/keygate.service etc/keygate/keygate.yaml \
         etc/keygate/keys.yaml etc/logrotate.d/keygate usr/share/man/man1/keygate.1.gz \
         usr/share/bash-completion/completions/keygate usr/share/zsh/vendor-completions/_keygate \
         usr/share/fish/vendor_completions.d/keygate.fish usr/share/doc/keygate/README.md \
         usr/share/doc/keygate/examples/keys.yaml; do
  [ -e "$root/$f" ] || fail "missing /$f"
done
[ "$(stat -c %a "$root/usr/bin/keygate")" = 755 ] || fail "/usr/bin/keygate is not 0755"
"$root/usr/bin/keygate" --version | grep -q '^keygate ' || fail "the binary does not run"

grep -qx /etc/keygate/keygate.yaml "$control/conffiles" || fail "keygate.yaml is not a conffile"
grep -qx /etc/keygate/keys.yaml "$control/conffiles" || fail "keys.yaml is not a conffile"
grep -qx /etc/logrotate.d/keygate "$control/conffiles" || fail "the logrotate file is not a conffile"

# logrotate: the access-log path the README documents, rotated by renaming (keygate
# creates the new file when SIGUSR1 makes it reopen the path), and a configuration
# logrotate accepts.
lr="$root/etc/logrotate.d/keygate"
[ "$(stat -c %a "$lr")" = 644 ] || fail "/etc/logrotate.d/keygate is not 0644"
grep -q '^/var/log/keygate/access.log {' "$lr" || fail "logrotate does not name /var/log/keygate/access.log"
grep -q 'nocreate' "$lr" || fail "logrotate would create the new file as root"
grep -q 'signal=SIGUSR1 keygate.service' "$lr" || fail "logrotate does not send SIGUSR1 to keygate"
grep -q '^LogsDirectory=keygate$' "$root/usr/lib/systemd/system/keygate.service" || fail "the unit lacks LogsDirectory=keygate"
logrotate --debug --state "$control/logrotate.state" "$lr" >/dev/null 2>&1 || fail "logrotate rejects /etc/logrotate.d/keygate"
depends="$(sed -n 's/^Depends: //p' "$control/control")"
echo "$depends" | grep -q 'libc6' || fail "Depends lacks libc6: $depends"
if echo "$depends" | grep -q 'libssl'; then fail "OpenSSL is linked in; Depends names libssl: $depends"; fi
# Every shared library the binary needs is declared (or is the C runtime's own).
for lib in $(objdump -p "$root/usr/bin/keygate" | awk '/NEEDED/ {print $2}'); do
  case "$lib" in libc.so*|libm.so*|libgcc_s.so*|ld-linux*|libpthread.so*|libdl.so*|librt.so*) ;;
    *) fail "undeclared library dependency $lib" ;; esac
done
grep -q 'deb-systemd-helper' "$control/postinst" || fail "postinst lacks the systemd snippet"
grep -q '/etc/keygate/shared-secret' "$control/postinst" || fail "postinst does not make the secret"

zcat "$root/usr/share/man/man1/keygate.1.gz" | grep -q '^\.TH keygate' || fail "man page has no title"
zcat "$root/usr/share/man/man1/keygate.1.gz" | grep -q 'reload' || fail "man page lacks the reload command"
grep -q 'keygate' "$root/usr/share/bash-completion/completions/keygate" || fail "bash completion is empty"

unit="$root/usr/lib/systemd/system/keygate.service"
grep -qx 'ExecStart=/usr/bin/keygate run --config /etc/keygate/keygate.yaml' "$unit" || fail "unit ExecStart"
sed "s#/usr/bin/keygate#$root/usr/bin/keygate#g" "$unit" > "$control/keygate.service"
systemd-analyze verify "$control/keygate.service" || fail "systemd-analyze verify failed"

# The shipped configuration checks as installed (empty keys file, secret from a credential).
printf 'check-deb-secret-0123456789abcdef\n' > "$control/shared-secret"
sed "s#keys_file: keys.yaml#keys_file: $root/etc/keygate/keys.yaml#" "$root/etc/keygate/keygate.yaml" > "$control/keygate.yaml"
out="$(CREDENTIALS_DIRECTORY="$control" "$root/usr/bin/keygate" check --config "$control/keygate.yaml")" \
  || fail "the shipped configuration does not check"
echo "$out" | grep -q '0 consumers' || fail "the installed keys file is not empty: $out"
echo "check-deb: ok: $(basename "$deb")"
