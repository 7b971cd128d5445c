# glmkit with prodigal and MMseqs2. Build: docker build -t glmkit .
# GPU nodes: pass a CUDA wheel index, e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends prodigal mmseqs2 \
 && rm -rf /var/lib/apt/lists/*

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" torch

WORKDIR /opt/glmkit
COPY pyproject.toml README.md ./
COPY glmkit ./glmkit
RUN pip install --no-cache-dir '.[models]' && glmkit --version

# Singularity runs as the calling user: keep caches out of the read-only image.
ENV TORCH_HOME=/tmp/torch MPLCONFIGDIR=/tmp/matplotlib
ENTRYPOINT ["glmkit"]
CMD ["--help"]
