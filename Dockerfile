# syntax=docker/dockerfile:1
# xferscale on NVIDIA's NGC PyTorch image (torch, CUDA, NCCL, DALI): the same environment
# as apptainer.def, for Docker/Podman sites and as the first stage of the CI build.
#
#   docker build $(sed -n 's/^\([A-Z_]*=.*\)/--build-arg \1/p' container/versions.env) -t xferscale .
#   docker run --gpus all xferscale pretrain --config NAME key=value ...
#
# The ARG defaults repeat container/versions.env (tests/test_container.py checks that they agree).
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:26.09-py3
FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG XFERSCALE_VERSION=0.1.0
ARG HOROVOD_VERSION=0.28.1
ARG WITH_HOROVOD=1

LABEL org.opencontainers.image.title="xferscale" \
      org.opencontainers.image.version="${XFERSCALE_VERSION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.opencontainers.image.description="Large-scale pre-training and transfer (Cherti & Jitsev 2021), reproduced and benchmarked" \
      xferscale.horovod="${WITH_HOROVOD}"

# Only where a site's network needs them (a TLS-inspecting proxy's CA bundle, a PyPI mirror):
# build arguments reach the install step as environment variables, and leave no ENV behind.
ARG PIP_CERT=
ARG PIP_INDEX_URL=

# The suite lives in a venv on top of the base's Python (container/install_suite.sh).
ENV PYTHONNOUSERSITE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/xferscale/venv/bin:${PATH}

WORKDIR /opt/xferscale
COPY . /opt/xferscale/
RUN HOROVOD_VERSION="${HOROVOD_VERSION}" WITH_HOROVOD="${WITH_HOROVOD}" \
    bash /opt/xferscale/container/install_suite.sh /opt/xferscale

ENTRYPOINT ["xferscale"]
CMD ["--help"]
