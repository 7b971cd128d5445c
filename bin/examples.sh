#!/usr/bin/env bash
# glmkit as a shell pipeline. Usage: bin/examples.sh assembly.fna.gz outdir/ (rerunning replaces the outputs)
set -euo pipefail
assembly=${1:?usage: examples.sh ASSEMBLY.fna[.gz] OUTDIR}
out=${2:?usage: examples.sh ASSEMBLY.fna[.gz] OUTDIR}
mkdir -p "$out"

# gzip is detected from the bytes; '-' reads stdin, so assemblies can stream in
cat "$assembly" | glmkit call - -o "$out/elements.zarr" --gff "$out/genes.gff" --proteins "$out/proteins.faa" --threads 4 --force

# OMG quality rules, with the report of every removed element; then gLM sub-contigs
glmkit filter "$out/elements.zarr" -o "$out/filtered.zarr" --report "$out/filter_report.tsv" --force
glmkit filter "$out/elements.zarr" -o "$out/subcontigs.zarr" --report - --glm-subcontigs --quiet --force \
  | awk -F'\t' 'NR > 1 { n[$7]++ } END { for (r in n) print r, n[r] }'
