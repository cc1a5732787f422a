#!/usr/bin/env bash
# Docs review: build the HTML docs, then take 1280-px-wide screenshots of the pages a new user sees first, with a
# headless Chromium (apt-get install chromium). The artefacts go outside the repository.
#
#   bash docs/screenshots.sh [OUT_DIR]          default OUT_DIR: ${TMPDIR:-/tmp}/tokenprune-docs-review
#   DOCS_HTML=/tmp/docs_build bash docs/screenshots.sh   reuse an existing build instead of building
#
# OUT_DIR/html holds the build (unless DOCS_HTML is given) and OUT_DIR/*.png the screenshots.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${TMPDIR:-/tmp}/tokenprune-docs-review}"
width="${SCREENSHOT_WIDTH:-1280}"
mkdir -p "$out"
html="${DOCS_HTML:-$out/html}"
if [ -z "${DOCS_HTML:-}" ]; then
  "${PYTHON:-python}" -m sphinx -W --keep-going -b html docs "$html"
fi
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
  echo "no headless browser found: apt-get install chromium (or set PATH to one)" >&2
  exit 2
fi
pages="index guides/quickstart generated/models generated/specs/llava benchmarks/quality benchmarks/speed"
for page in $pages; do
  shot="$out/$(echo "$page" | tr / -).png"
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$width,2000" \
    --screenshot="$shot" "file://$(realpath "$html")/$page.html" 2>/dev/null
  echo "$shot"
done
