# One image for every service; the command picks it:
#   docker run IMAGE aggregator run     docker run IMAGE mailer run     docker run IMAGE topics apply
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml ./
COPY requirements/runtime.lock ./requirements/
RUN pip wheel --wheel-dir /wheels --require-hashes -r requirements/runtime.lock
COPY services ./services
RUN pip wheel --wheel-dir /wheels --no-deps .

FROM python:3.11.14-slim-bookworm
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
