#!/bin/sh
# Install the Debian packages that the tests use (chromium and chromium-driver for the browser
# test, wordnet-base for WordNet 3.0) when they are missing and this user can: root with apt-get.
# Otherwise print one line naming what is missing; the tests that need it are then skipped.
# Never fails the make target that calls it.
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
[ -f /usr/share/wordnet/data.noun ] || missing="$missing wordnet-base"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    browser=$(echo "$missing" | tr ' ' '\n' | grep chromium | tr '\n' ' ')
    if apt-get update -qq \
        && { [ -z "$browser" ] || apt-get install -y -qq $browser >/dev/null; } \
        && { case "$missing" in *wordnet-base*) apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null;; esac; }; then
        exit 0
    fi
    echo "apt-get could not install$missing; the tests that need them will be skipped" >&2
else
    echo "missing Debian packages:$missing (apt-get install$missing as root); the tests that need them will be skipped" >&2
fi
exit 0
