# Ferry in a container: a Swift builder stage, then a slim Debian runtime with Python, numpy
# and the ferry-ipc wheel (libferry.so inside) plus the `ferry` command. See docs/deploy.md
# for /dev/shm sizing and for sharing a channel between containers.
#
#   docker build -t ferry .
#   docker run --rm --shm-size=256m ferry ferry demo --batches 300 --client-cpu -1 --worker-cpus ""
#
# ---- build ------------------------------------------------------------------------------
FROM swift:6.1-bookworm AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      make pkg-config libzstd-dev libturbojpeg0-dev libhiredis-dev \
      python3 python3-dev python3-venv python3-pip python3-numpy binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# One release build (libferry.so, the command), then the wheel from it; both stripped.
RUN swift build -c release -debug-info-format none --product ferry && swift build -c release -debug-info-format none --product ferry-cli \
 && strip --strip-unneeded .build/release/libferry.so -o /tmp/libferry.so \
 && strip --strip-unneeded .build/release/ferry-cli -o /tmp/ferry \
 && python3 -m venv --system-site-packages /tmp/wheel-venv \
 && /tmp/wheel-venv/bin/pip install -q setuptools wheel \
 && FERRY_LIBRARY=/tmp/libferry.so /tmp/wheel-venv/bin/pip wheel -q --no-deps --no-build-isolation -w /tmp/dist python/

# ---- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3 python3-venv python3-numpy libzstd1 libturbojpeg0 libhiredis0.14 libstdc++6 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /tmp/dist/*.whl /tmp/
# A venv (Debian's python3 refuses system-wide pip installs, PEP 668) that sees Debian's numpy.
RUN python3 -m venv --system-site-packages /opt/ferry \
 && /opt/ferry/bin/pip install -q --no-deps /tmp/ferry_ipc-*.whl && rm /tmp/*.whl
COPY --from=build /tmp/ferry /usr/local/bin/ferry
ENV PATH=/opt/ferry/bin:$PATH FERRY_PYTHON=/opt/ferry/bin/python OPENBLAS_NUM_THREADS=1
# Workers and clients of one channel must run as the same user (channels are per user).
USER 1000:1000
CMD ["ferry", "--help"]
