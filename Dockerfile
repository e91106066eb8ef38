# syntax=docker/dockerfile:1
# lagscaler: the service image. Build: docker build -t lagscaler .
# Two stages so the runtime image carries wheels only, no compiler or pip cache.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lagscaler ./lagscaler
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# A fixed non-root UID/GID matching the Helm chart's securityContext (runAsUser: 65532).
RUN groupadd --gid 65532 lagscaler && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin lagscaler
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY policies /etc/lagscaler/examples
USER 65532:65532
# The root filesystem is read-only in the chart; Python must not try to write bytecode next to the code.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 6443 9090
ENTRYPOINT ["lagscaler"]
CMD ["serve", "--help"]
