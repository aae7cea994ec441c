# kubenas operator image: the kopf operator, the planner and the search core. No torch.
#
#   docker build -t kubenas-operator .
#   docker run --rm kubenas-operator --help
#
# Runs as a non-root user on a read-only root filesystem (HOME and caches go to /tmp).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trial_image/kubenas_trial ./trial_image/kubenas_trial
# The base distribution only: the [trial] extra (torch) stays in the trial image.
RUN /opt/venv/bin/pip install . \
 && if /opt/venv/bin/python -c "import torch" 2>/dev/null; then echo "torch must not be in the operator image" >&2; exit 1; fi

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kubenas-operator" \
      org.opencontainers.image.description="kubenas: Kubernetes-native NAS/HPO operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["kubenas", "operator"]
CMD ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
