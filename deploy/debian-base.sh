#!/bin/sh
# A local debian:bookworm-slim made from Debian's own packages, for building the
# images where no container registry answers (`make base-image` runs this when the
# engine has no such image yet). It is what the official slim image is: debootstrap's
# minbase variant with documentation, manuals and translations left out, apt's caches
# cleaned after each install, CMD bash.
#
#   deploy/debian-base.sh ENGINE IMAGE [MIRROR [SECURITY_MIRROR]]
#
# ENGINE is the engine command ("podman --runtime runc" or "docker"); the mirrors are
# the ones apt-get uses inside the image builds too (an air-gapped network sets its
# own). Needs root (debootstrap).
set -eu

engine=$1
image=$2
mirror=${3:-http://deb.debian.org/debian}
security_mirror=${4:-http://deb.debian.org/debian-security}
suite=bookworm

work=$(mktemp -d "${TMPDIR:-/tmp}/medocr-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    exit 1
}

cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF

# The official image's dpkg and apt settings: later installs stay slim too.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"

# What those settings would have kept out, and what debootstrap copied from this host.
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/lintian/* "$rootfs"/usr/share/linda/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
find "$rootfs/var/log" -type f -delete

# $engine is a command with options: split on purpose.
# shellcheck disable=SC2086
tar --numeric-owner -C "$rootfs" -c . | $engine import --change 'CMD ["bash"]' - "$image" >/dev/null
echo "imported $image ($suite minbase from $mirror)"
