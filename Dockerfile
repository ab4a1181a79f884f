# The daily job as a container image (cron, Kubernetes CronJob, AWS Batch).
#
#   docker build -t d2d .
#   docker run --rm -e DATABASE_URL=postgres://... -e D2D_LANDING=s3://landing/data \
#       -e D2D_LAKE=s3://lake -e AWS_REGION=eu-central-1 d2d --date 2019-06-01
#
# compose.yaml runs the whole local stack (PostgreSQL, S3-compatible server, set-up, the job on
# a schedule) from this image. tests/deploy.rs checks that both files name only binaries, flags
# and variables the job has.
#
# Off a terminal the job writes JSON log lines; its exit status says whether the day loaded.
# CI builds the runtime stage below as it is, with podman, the `build` stage replaced by the
# binaries cargo built (`--build-context build=DIR`, the binaries where that stage leaves
# them), and runs it against the test services: scripts/test-container, tests/container.rs.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      --example daily_load --example setup_warehouse --example populate_landing

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/examples/daily_load \
                  /src/target/release/examples/setup_warehouse \
                  /src/target/release/examples/populate_landing /usr/local/bin/
# A folder lake mounted here (compose.yaml's `lake` volume) is writable by the job's user.
RUN mkdir /lake && chown 65534:65534 /lake
USER 65534:65534
# Other binaries of the image: `docker run --entrypoint setup_warehouse d2d` (as compose.yaml).
ENTRYPOINT ["daily_load"]
