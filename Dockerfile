# The bot as a container for Azure App Service (infra/main.bicep) or any container host.
#   docker build -t veilig-doorverwijzen .
# The image runs with BOT_ENV=production: it refuses to start without authentication, Key Vault,
# MAIL_TRANSPORT=graph or smtp and the tenant lists (infra/modules/webapp.bicep sets them all).
# To try it on your own machine (embedded defaults, authentication off: publish on loopback only):
#   docker run -p 127.0.0.1:3978:3978 -e BOT_ENV=development veilig-doorverwijzen
# Two stages: dependencies are installed into a virtual environment in the first, and only that
# environment and the application files are copied into the second (no compilers, no pip cache).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
RUN python -m venv /opt/venv
COPY requirements.txt .
RUN /opt/venv/bin/pip install --requirement requirements.txt

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=3978 \
    BOT_DATA_DIR=/data \
    BOT_ENV=production
RUN groupadd --system --gid 10001 bot \
 && useradd --system --uid 10001 --gid bot --home-dir /app --no-create-home --shell /usr/sbin/nologin bot \
 && mkdir /data \
 && chown bot:bot /data \
 && chmod 0700 /data
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY bot/ bot/
COPY cards/ cards/
COPY infra/protocols/ infra/protocols/
# Compiled once here, as root: a start writes no bytecode (PYTHONDONTWRITEBYTECODE, /app is root's),
# so without this every start compiled the bot's ~100 modules from source (0.2-0.3 s of each start).
RUN python -m compileall -q bot cards
USER 10001:10001
EXPOSE 3978
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3978') + '/healthz', timeout=4)"
CMD ["python", "-m", "bot", "serve"]
