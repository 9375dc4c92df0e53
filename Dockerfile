# syntax=docker/dockerfile:1
#
# The fleetledger image: `fleetledger worker` by default, any other subcommand on request
# (`docker run IMAGE simulate --runs 100`, `docker compose run --rm cli runs`).
#
# The project is installed exactly the way the README installs it on a fresh machine: the
# Makefile's `install` target (a virtualenv in .venv, the three distributions editable), the
# same recipe `make demo` and `make test` run first.  There is no second install path.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# `make` runs the install recipe; every dependency ships wheels, so no compiler is needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid so Kubernetes can verify runAsNonRoot.  /var/lib/fleetledger is
# the working directory at run time: the archive of oversized bundles (a volume) and, in
# embedded mode, the SQLite store live there.
RUN groupadd --system --gid 10001 fleetledger \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/fleetledger \
      --shell /usr/sbin/nologin fleetledger \
 && mkdir -p /var/lib/fleetledger/archive \
 && chown -R 10001:10001 /var/lib/fleetledger

WORKDIR /app
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip make install
ENV PATH="/app/.venv/bin:${PATH}"

USER 10001:10001
WORKDIR /var/lib/fleetledger
ENTRYPOINT ["fleetledger"]
CMD ["worker"]
