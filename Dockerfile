# The lancequeue image: the writer, the producer library and the CLI.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY common ./common
COPY producer ./producer
COPY writer ./writer
COPY cli ./cli
COPY bench ./bench
COPY examples ./examples
RUN pip install --no-cache-dir . && useradd --create-home lancequeue \
    && mkdir /data && chown lancequeue /data
USER lancequeue
ENTRYPOINT ["lancequeue"]
CMD ["--help"]
