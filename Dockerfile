# One image for every hookline process; the command picks which one:
#   hookline migrate | front | ingest | project | mail | schedule | api
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# HAProxy for `hookline front`, from Debian's packages
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin hookline

WORKDIR /app
# dependencies first, so that a code change does not reinstall them: exactly the pinned
# versions of the lock, each file checked against its hash (scripts/lock writes it)
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY pyproject.toml alembic.ini ./
COPY hookline hookline
# a plain install, as from a wheel: `hookline migrate` finds the migrations inside the package
RUN pip install --no-deps . && rm -rf hookline build

USER hookline
EXPOSE 8000 8001 8002 8003 8004
CMD ["hookline", "--help"]
