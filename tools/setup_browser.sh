#!/usr/bin/env bash
# Headless Chromium + chromedriver for the web demo's browser test (tests/test_web_demo.py), from
# Debian's packages (`chromium`, `chromium-driver`): Chromium's own browser downloads (selenium
# manager, playwright install) need the open internet, Debian's mirror does not.
#
#   sudo bash tools/setup_browser.sh      # CI's .ci/run calls it before the test command
#
# Idempotent: does nothing when both are already on PATH. Without root, or without apt-get, it only
# says so and exits 0 (the browser test then skips, naming this script). An apt-get failure as root is
# a real error (exit code != 0): CI must not silently skip the browser test.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if { have chromium || have chromium-browser || have google-chrome; } && have chromedriver; then
    echo "setup_browser: chromium and chromedriver already installed ($(command -v chromedriver))"
    exit 0
fi
if ! have apt-get; then
    echo "setup_browser: no apt-get here; install Chromium and chromedriver yourself (the browser test skips until then)"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "setup_browser: not root; run 'sudo bash tools/setup_browser.sh' (the browser test skips until then)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver
echo "setup_browser: installed $(chromium --version 2>/dev/null || echo chromium) and $(chromedriver --version | cut -d' ' -f1-2)"
