# One image for every service; the command picks it:
#   docker run IMAGE aggregator run     docker run IMAGE mailer run     docker run IMAGE topics apply
# The base is pinned by the digest of its multi-architecture index (the tag is kept for people; the
# digest is what is pulled). No registry answers from our build machines, so the digest was read from
# public sources that pin this tag, not pulled here: `python -m scripts.pin_base_image` resolves the
# tag again and rewrites both lines where a registry answers (run it when the base is to move).
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml ./
COPY requirements/runtime.lock ./requirements/
RUN pip wheel --wheel-dir /wheels --require-hashes -r requirements/runtime.lock
COPY services ./services
RUN pip wheel --wheel-dir /wheels --no-deps .

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TN_DATA_DIR=/data/aggregator TN_LOG_FORMAT=json
COPY --from=build /wheels /wheels
RUN pip install --no-index --no-deps /wheels/*.whl && rm -rf /wheels \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app /data/aggregator && chown -R app:app /app /data
WORKDIR /app
COPY --chown=10001:10001 schemas /app/schemas
USER 10001:10001
VOLUME ["/data"]
EXPOSE 6066 9108
ENTRYPOINT ["trainee-notify"]
CMD ["--help"]
