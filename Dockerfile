# saferoom server image: slim Python, a non-root user, datasets/state/PKI as volumes.
#   docker build -t saferoom .
#   docker run --rm -v $PWD/data:/data:ro -v saferoom-state:/state -v $PWD/pki:/pki:ro -p 50051:50051 saferoom
# What the sandbox needs from the container runtime: README "Operating saferoom" (containers).

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY saferoom ./saferoom
COPY algorithms ./algorithms
# The server and the Spark Connect client (for datasets declared engine = "spark"), as wheels.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[spark]'

FROM python:3.11-slim-bookworm
# libseccomp2: the workers' system call filter is compiled with it (without it the server logs "seccomp OFF").
# tini: PID 1 that forwards SIGTERM and reaps the workers' zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libseccomp2 tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /state --shell /usr/sbin/nologin saferoom \
    && mkdir -p /data /state /pki \
    && chown saferoom:saferoom /state \
    && chmod 0700 /state
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY deploy/entrypoint.sh /usr/local/bin/saferoom-entrypoint

USER saferoom
VOLUME ["/data", "/state", "/pki"]
# gRPC (mutual TLS); the metrics/probe port listens on the container's loopback unless told otherwise.
EXPOSE 50051 9464
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/saferoom-entrypoint"]
CMD ["serve"]
