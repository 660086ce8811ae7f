# fcn-sweep on a CUDA PyTorch image: reproduce one run, or serve as a W&B agent on a GPU machine.
#   scripts/docker_build.sh -t fcn-sweep       (stages FashionMNIST into the context, then docker build .)
#   mkdir -p runs && docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD/runs:/work/runs" \
#       fcn-sweep train --epochs=30
#   docker run --rm --gpus all -e WANDB_API_KEY fcn-sweep wandb-agent ENTITY/PROJECT/SWEEP_ID
# Needs BuildKit (the default builder since Docker 23) for the bind mount below.
#
# The base image's tag pins Python, torch, torchvision and CUDA; the lock pins everything installed
# on top. The default's torch is the one the test suite runs on (pyproject's range, CI's torch matrix;
# scripts/make_base_image.sh builds the same torch as a local stand-in). For byte-identical rebuilds
# pin the base's digest too: BASE_IMAGE=pytorch/pytorch:TAG@sha256:...
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FCN_SWEEP_DATA=/opt/fashion-mnist \
    HOME=/home/fcn

# One RUN, so one layer: the build context is bind-mounted, not copied in (a copy would be a layer of
# its own, and a full copy of the multi-GB base on storage drivers such as vfs).
# - The lock is installed with dependency resolution on and hashes required: a dependency the lock
#   misses is unpinned, so pip refuses it and the build fails instead of drifting.
# - The package itself goes in with --no-index: its requirements must already be met, torch and
#   torchvision by the base image, the rest by the lock.
# - The data is checked against the published md5 here, so a bad copy fails the build, not a run.
# - HOME and /work are writable by any uid, so `docker run --user "$(id -u):$(id -g)"` works too.
RUN --mount=type=bind,target=/src,rw \
    python -m pip install --require-hashes -r /src/docker/requirements.lock \
    && python -m pip install --no-index --no-build-isolation /src \
    && install -d -m 0755 /opt/fashion-mnist \
    && cp /src/docker/fashion-mnist/*-ubyte.gz /opt/fashion-mnist/ \
    && python -c "from fcn_sweep.data import load_arrays; load_arrays('/opt/fashion-mnist')" \
    && useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin fcn \
    && install -d -m 1777 /home/fcn /work \
    && fcn-sweep --help >/dev/null

USER 1000:1000
WORKDIR /work
ENTRYPOINT ["fcn-sweep"]
CMD ["--help"]
