#!/bin/bash
# Regenerate the pictures of docs/tutorial.md and docs/commands/*.md from the full demo (a few minutes on
# 2 cores; random-weight ESM2 and the synthetic corpus, see the tutorial), and print the demo's summary table.
#   bash docs/images/make.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)/glmkit-demo}
/usr/bin/time -f "full demo: %e s, peak RSS %M KB" glmkit demo "$work" --threads 2
cp "$work/glm/curves.png" "$here/glm_curves.png"
cp "$work/glm2/curves.png" "$here/glm2_curves.png"
cp "$work/attention.png" "$here/attention.png"
cp "$work/operons/pr.png" "$here/operons_pr.png"
cp "$work/operons/heads.png" "$here/operons_heads.png"
cp "$work/partners.png" "$here/partners.png"
cp "$work/contacts.png" "$here/contacts.png"
cp "$work/dedup/remaining.png" "$here/remaining.png"
cat "$work/summary.tsv"
