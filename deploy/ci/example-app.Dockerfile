# CI's stand-in for the compose example's app images (traefik/whoami, curlimages/curl), which
# no registry serves there: Debian with python3 (whoami.py) and curl. deploy/images.sh builds
# it from the locally made debian:bookworm-slim (which has both), context deploy/ci.
FROM debian:bookworm-slim
COPY whoami.py /usr/local/bin/whoami.py
ENTRYPOINT ["python3", "/usr/local/bin/whoami.py"]
