# syntax=docker/dockerfile:1
# Build wheels in a full image, run from a slim one without compilers or pip caches.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamobs ./streamobs
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# A fixed non-root uid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 65532 streamobs \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin streamobs
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
USER 65532:65532
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 9464
# For Docker and Podman (Kubernetes uses the pod's probes instead). The slim image has no
# curl: Python asks the daemon's /healthz; set STREAMOBS_HEALTHCHECK_URL if the config
# listens elsewhere.
ENV STREAMOBS_HEALTHCHECK_URL=http://127.0.0.1:9464/healthz
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['STREAMOBS_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["streamobs"]
CMD ["run", "--config", "/etc/streamobs/streamobs.yml"]
