# syntax=docker/dockerfile:1
# One image for the four pyfaas services; the command picks one:
#   python -m pyfaas_api | pyfaas_deployer | pyfaas_gateway | pyfaas_reaper
# Built by `docker build -t pyfaas .`; run by docker-compose.yml and k8s/.
# Both stages use the same Python image, so the virtual environment's interpreter path
# (/usr/local/bin/python3.11) exists unchanged in the final one.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, from the lock alone: this layer survives edits to the code.
COPY uv.lock pyproject.toml ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY services/api/pyproject.toml services/api/pyproject.toml
COPY services/deployer/pyproject.toml services/deployer/pyproject.toml
COPY services/gateway/pyproject.toml services/gateway/pyproject.toml
COPY services/reaper/pyproject.toml services/reaper/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-install-workspace
# Then pyfaas itself, installed (not editable) so the final image needs no sources.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-editable

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 pyfaas \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/pyfaas --create-home \
      --shell /usr/sbin/nologin pyfaas
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYFAAS_DATA_DIR=/var/lib/pyfaas \
    PYFAAS_API_HOST=0.0.0.0 \
    PYFAAS_GATEWAY_HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/pyfaas
EXPOSE 8000 8080
CMD ["python", "-m", "pyfaas_api"]
