# AutoLoss-Zero workers and command line (CPU). Built and used by docker-compose.yml.
# Untested here: no Docker on the development machine (see README "Docker").
FROM python:3.11-slim

# compilers: mmcv and xtcocotools are built from source by scripts/install.sh, and the
# rejection kernel (alz_core/rejection/native) is compiled with `cc` on first use
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential git libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# the user every container of the image runs as (not root); uid 10001 is the owner of the
# libpq password file that docker-compose's `secrets` service writes
RUN groupadd --gid 10001 alz \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/alz \
        --shell /usr/sbin/nologin alz

WORKDIR /app
COPY . /app
# the same installer as a bare machine (as root: it installs system packages first); the
# project and its .venv stay root-owned, so the running user cannot change the code
RUN bash scripts/install.sh

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/home/alz
# writable by the user: the workers' synthetic data and work directories (.alz/data), the
# native kernel's cache (~/.cache/alz/native), Streamlit's and mmengine's caches
WORKDIR /home/alz
USER 10001:10001
# the embedded server is not used in containers: set ALZ_DATABASE_URL (docker-compose does)
CMD ["alz", "--help"]
