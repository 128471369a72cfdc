#!/usr/bin/env bash
# Print the Debian mirror this machine's apt already uses (first "deb" URI of its main archive).
#
# The container recipe and the helper Apptainer tree take their mirror from here rather than from
# the repository, so the project never names a package host and follows whatever mirror or proxy
# the site configured. Override with FITSAE_MIRROR.
set -euo pipefail

if [ -n "${FITSAE_MIRROR:-}" ]; then
  printf '%s\n' "$FITSAE_MIRROR"
  exit 0
fi

mirror=""
# deb822 sources (Debian 12 default): the URIs of the stanza whose Suites hold a bare release
# name (not -security / -updates).
for f in /etc/apt/sources.list.d/*.sources; do
  [ -r "$f" ] || continue
  mirror="$(awk '
    BEGIN { RS=""; FS="\n" }
    {
      uris=""; plain=0
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris=u[1] }
        if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); n=split($i, s, /[ \t]+/)
                               for (j = 1; j <= n; j++) if (s[j] !~ /-/) plain=1 }
      }
      if (uris != "" && plain && uris !~ /security/) { print uris; exit }
    }' "$f")"
  [ -n "$mirror" ] && break
done
# one-line sources
if [ -z "$mirror" ]; then
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    mirror="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/ && $(i+1) !~ /-/) { print $i; exit } break } }' "$f")"
    [ -n "$mirror" ] && break
  done
fi
if [ -z "$mirror" ]; then
  echo "host-mirror: no Debian mirror found in /etc/apt; set FITSAE_MIRROR=<url of a Debian mirror>" >&2
  exit 2
fi
printf '%s\n' "${mirror%/}"
