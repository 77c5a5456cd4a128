# AutoLoss-Zero workers and command line (CPU). Built and used by docker-compose.yml.
# Untested on the development machine (no Docker there); see README "Docker".
FROM python:3.11-slim

# compilers: mmcv and xtcocotools are built from source by scripts/install.sh, and the
# rejection kernel (alz_core/native) is compiled with `cc` on first use
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential git libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . /app
# the same installer as a bare machine; the mmcv wheel it builds is kept in the image's cache
RUN bash scripts/install.sh

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1
# the embedded server is not used in containers: set ALZ_DATABASE_URL (docker-compose does)
CMD ["alz", "--help"]
