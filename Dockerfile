# CPU image by default. For CUDA: --build-arg BASE=nvidia/cuda:12.6.3-runtime-ubuntu24.04
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FOOLING_HOST=0.0.0.0 FOOLING_PORT=8000
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
      && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /srv/fooling-lab
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, so code changes do not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py && pip install . && pip uninstall -y fooling-lab && rm -rf app
COPY app app
COPY templates templates
COPY static static
COPY models models
RUN pip install --no-deps -e .

# Runs as an unprivileged user. Everything the server keeps (jobs, uploads, the databases, its
# signing key when FOOLING_SECRET_KEY is unset, downloaded weights) is under data/, a volume:
# mount one there or a new container starts empty.
ENV TORCH_HOME=/srv/fooling-lab/data/torch
RUN useradd --system --uid 10001 --home-dir /srv/fooling-lab --shell /usr/sbin/nologin fooling \
    && mkdir -p /srv/fooling-lab/data && chown fooling /srv/fooling-lab/data
VOLUME ["/srv/fooling-lab/data"]
USER fooling

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD \
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
CMD ["python3", "-m", "app", "serve"]
